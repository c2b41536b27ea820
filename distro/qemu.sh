#!/usr/bin/env bash
# Boot an IOhubOS image headless under qemu, the serial console on stdout.
#
#   distro/qemu.sh IMG [--uefi] [--disk2 FILE] [--kvm] [--no-reboot] [--timeout SECS] [--mem MIB]
#
# TCG by default (KVM does not work on every host, e.g. nested virtualisation that fails on the
# kernel's first instructions; --kvm asks for it). Networking is qemu's user mode (no host
# interface, route or firewall is touched). --uefi boots through OVMF with a scratch copy of its
# variable store; --disk2 adds a second virtio disk (e.g. the target of iohub-installer);
# --timeout stops qemu after SECS (exit 124).
set -euo pipefail
usage() { echo "usage: distro/qemu.sh IMG [--uefi] [--disk2 FILE] [--kvm] [--no-reboot] [--timeout SECS] [--mem MIB]" >&2; exit 2; }
(($#)) || usage
img=$1
shift
uefi=0 disk2="" accel=tcg noreboot=() limit="" mem=1024
while (($#)); do
  case "$1" in
    --uefi) uefi=1; shift ;;
    --disk2) disk2=${2:?}; shift 2 ;;
    --kvm) accel=kvm; shift ;;
    --no-reboot) noreboot=(-no-reboot); shift ;;
    --timeout) limit=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[ -f "$img" ] || { echo "qemu.sh: no image $img" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu.sh: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 2; }

# shellcheck disable=SC2054 # qemu's option values contain commas
args=(-accel "$accel" -m "$mem" -smp 2 -display none -monitor none -nodefaults -serial stdio
  -drive "file=$img,format=raw,if=virtio,cache=unsafe"
  -nic user,model=virtio-net-pci -device virtio-rng-pci "${noreboot[@]}")
[ -z "$disk2" ] || args+=(-drive "file=$disk2,format=raw,if=virtio,cache=unsafe")
scratch=""
if ((uefi)); then
  code=/usr/share/OVMF/OVMF_CODE_4M.fd vars=/usr/share/OVMF/OVMF_VARS_4M.fd
  if ! [ -f "$code" ] || ! [ -f "$vars" ]; then
    echo "qemu.sh: OVMF missing (apt-get install ovmf)" >&2
    exit 2
  fi
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  trap 'exit 143' TERM INT
  cp "$vars" "$scratch/vars.fd"
  args+=(-machine q35 -drive "if=pflash,format=raw,readonly=on,file=$code"
    -drive "if=pflash,format=raw,file=$scratch/vars.fd")
fi
if [ -n "$limit" ]; then
  # --foreground: qemu stays in this script's process group, so whoever ends the group ends qemu.
  timeout --foreground --kill-after=5 "$limit" qemu-system-x86_64 "${args[@]}" </dev/null
else
  qemu-system-x86_64 "${args[@]}"
fi
