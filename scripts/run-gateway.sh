#!/usr/bin/env bash
# Starts the gateway on its embedded defaults: WireGuard interface portcullis0 on UDP 30000 with
# address 10.255.0.1/16 (kernel WireGuard if the kernel has it, else wireguard-go), private key in
# state/portcullis0.key (mode 0600, created on first start). Idempotent: a second run changes nothing.
# Environment: PORTCULLIS_IFNAME, PORTCULLIS_LISTEN_PORT, PORTCULLIS_ADDRESS, PORTCULLIS_STATE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ifname=${PORTCULLIS_IFNAME:-portcullis0}
port=${PORTCULLIS_LISTEN_PORT:-30000}
address=${PORTCULLIS_ADDRESS:-10.255.0.1/16}
state=${PORTCULLIS_STATE_DIR:-$PWD/state}
ctl=./build/controlplane/ctl/portcullisctl
[[ -x $ctl ]] || { echo "run-gateway: $ctl missing: build first (cmake --preset release && cmake --build --preset release)" >&2; exit 1; }
install -d -m 700 "$state"
"$ctl" wg up "$ifname" --listen-port "$port" --address "$address" --private-key-file "$state/$ifname.key"
wg show "$ifname"
echo
echo "Apply agents from a wg(8) file with: $ctl wg sync $ifname FILE; state as JSON: $ctl wg dump $ifname"
