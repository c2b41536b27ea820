#!/usr/bin/env bash
# Run every iohub test on a fresh Debian 12 machine, as root: installs the prerequisites,
# then format check, clippy, and the whole test suite. Under CI=true a missing prerequisite
# fails the tests that need it instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(mosquitto mosquitto-clients busybox-static iproute2 nftables iptables dnsmasq-base
  isc-dhcp-client conntrack socat wireguard-tools wireguard-go hostapd wpasupplicant openssh-server
  tzdata docker.io docker-compose docker-registry ca-certificates python3 python3-venv openssl
  python3-paho-mqtt
  # the bridge's clustered remote (tests/tests/bridge_nats_cluster.rs): NATS with MQTT + JetStream
  nats-server
  # distro/: the image build and its qemu boots
  mmdebstrap squashfs-tools grub-pc-bin grub-efi-amd64-bin grub-common fdisk dosfstools mtools
  e2fsprogs coreutils cpio xz-utils zstd binutils qemu-system-x86 ovmf)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "run as root to install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# dockerd: apt does not start it in a container or under policy-rc.d, so start it here when
# none answers (its own log under target/), and wait for its API.
if ! docker info >/dev/null 2>&1; then
  mkdir -p target
  echo "== starting dockerd (log: target/dockerd.log)"
  (setsid dockerd >target/dockerd.log 2>&1 &)
  for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see target/dockerd.log" >&2; exit 1; }
fi
# The Debian mosquitto package starts a system broker on 1883 when systemd runs it; tests use
# their own brokers on free ports and do not need it (nor the nats-server unit's 4222).

# schemathesis (PyPI), pinned (tests/src/lib.rs SCHEMATHESIS_VERSION), in a venv of its own:
# the admin API's OpenAPI test runs it against a real iohubd.
schemathesis_version=4.32.5
schemathesis_venv=target/schemathesis-venv
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$schemathesis_version"; then
  echo "== installing schemathesis $schemathesis_version into $schemathesis_venv"
  mkdir -p target
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi
export IOHUB_SCHEMATHESIS="$PWD/$schemathesis_venv/bin/schemathesis"

command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (>= 1.85)" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  # nextest does not run doctests
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
# The image tests: distro/test.sh builds the image from Debian's packages (the rootfs tarball is
# cached under target/distro/cache, keyed on the package list) with the dev binaries the test run
# above has just built, and boots it under qemu (BIOS, UEFI, A/B fallback, the installer). The
# squashfs level is lowered for time; the shipped image is built by distro/build.sh in release.
echo "== distro tests"
IOHUB_CARGO_PROFILE=dev IOHUB_SQUASHFS_LEVEL=${IOHUB_SQUASHFS_LEVEL:-3} distro/test.sh
