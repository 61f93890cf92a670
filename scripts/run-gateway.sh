#!/usr/bin/env bash
# Starts portcullisd in the foreground on its embedded defaults (or PORTCULLIS_* overrides, or
# --config FILE): WireGuard interface portcullis0 on UDP 30000 with 10.255.0.1/16 (kernel WireGuard
# if the kernel has it, else wireguard-go), state in ./state, HTTPS API on 127.0.0.1:8443. It logs
# the URL and the TLS fingerprint agents pin. Ctrl-C stops the daemon; tunnels and filters stay.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/controlplane/daemon/portcullisd
if [[ ! -x $bin ]]; then
  echo "run-gateway: $bin is missing: build first (cmake --preset release && cmake --build --preset release)" >&2
  exit 1
fi
exec "$bin" "$@"
