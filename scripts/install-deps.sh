#!/usr/bin/env bash
# Installs the Debian 12 packages Portcullis needs.
#   install-deps.sh          build + run the gateway
#   install-deps.sh --test   also what the test suite and benchmarks need
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev linux-libc-dev
  libmnl-dev libnftnl-dev libnetfilter-conntrack-dev libsodium-dev libexpected-dev
  libsqlite3-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev libssl-dev
  libcurl4-openssl-dev libsystemd-dev dpkg-dev libyaml-dev
)
run_pkgs=(wireguard-go wireguard-tools nftables iproute2)
test_pkgs=(
  googletest libgtest-dev libgmock-dev libbenchmark-dev clang-format
  iperf3 iptables iputils-ping netcat-openbsd socat python3 procps
  qemu-system-x86 busybox-static openssl
  prometheus  # promtool: metrics_test checks the /metrics exposition
)

pkgs=("${build_pkgs[@]}" "${run_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=("${test_pkgs[@]}")
fi

if [[ $EUID -ne 0 ]]; then
  echo "install-deps.sh: run as root (it calls apt-get)" >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#pkgs[@]} packages present"
fi

# CivetWeb for OpenSSL 3, from Debian's source package (cached; see the script for why).
"$(dirname "$0")/build-civetweb.sh"
