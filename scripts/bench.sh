#!/usr/bin/env bash
# Run the benchmarks of docs/benchmarks.md (release build, loopback only, bounded loops).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mosquitto >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null; }
command -v wireguard-go >/dev/null && command -v wg >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wireguard-go wireguard-tools >/dev/null; }
cargo build --release -q -p services -p iohubctl --bins -p iohub-bench -p bridge-queue --bin bridge-queue-tool
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
exec target/release/iohub-bench "$@"
