#!/usr/bin/env bash
# Run iohubd on a demo root with the embedded broker, on this machine, without touching it:
# plan-only backend, system root in a scratch directory. Ctrl-C stops it.
#   scripts/demo.sh [standalone|router]
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-router}
[ -d "examples/$example" ] || { echo "no example root examples/$example" >&2; exit 2; }
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (>= 1.85)" >&2; exit 1; }
if ! command -v mosquitto_sub >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto-clients >/dev/null || true
fi
cargo build --release -q -p services -p iohubctl --bins
demo=${DEMO_DIR:-$PWD/target/demo}
rm -rf "$demo"; mkdir -p "$demo"
cp -a "examples/$example/root" "$demo/root"
cp -a "examples/$example/system" "$demo/system"
echo "demo root:    $demo/root"
echo "system root:  $demo/system (effects land here, never in /)"
echo "try, in another shell:"
echo "  target/release/iohubctl --root $demo/root status"
echo "  target/release/iohubctl --root $demo/root set IOHUBOS_TIMEZONE=Europe/Rome"
echo "  mosquitto_sub -p \$(jq .port $demo/root/runtime/control.json) -u iohub -P \$(jq -r .password $demo/root/runtime/control.json) -t 'iohub/#' -v"
exec target/release/iohubd --root "$demo/root" --system-root "$demo/system" --control-addr 127.0.0.1:${IOHUB_CONTROL_PORT:-1884}
