#!/usr/bin/env bash
# Installs what the tests need, builds with AddressSanitizer + UBSan and -Werror, and runs every test:
# unit, netns (root, own namespaces, wireguard-go), bpf (BPF_PROG_TEST_RUN) and vm (kernel WireGuard
# inside ../shared/vm). Also checks formatting. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$*" $(( $(date +%s) - start )); }

step "install Debian packages"
./scripts/install-deps.sh --test

vm_run="$root/../shared/vm/run"
if [[ -x "$vm_run" ]]; then
  step "prepare the test VM"
  "$root/../shared/vm/setup" >/dev/null
else
  echo "test.sh: $vm_run not found; vm tests will fail" >&2
fi

step "check formatting (clang-format 14)"
git ls-files -- '*.h' '*.cpp' '*.c' | xargs -r clang-format --dry-run --Werror

step "configure and build (asan preset)"
cmake --preset asan >/dev/null
cmake --build --preset asan -j"$(nproc)"

step "run tests"
# A crash in an earlier run may leave namespaces; tests name theirs pcl-*-<pid> and clean up.
ctest --test-dir build-asan --output-on-failure --timeout 900 -j2
step "done"
