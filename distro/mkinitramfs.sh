#!/usr/bin/env bash
# mkinitramfs.sh ROOTFS KVER OUT: the IOhubOS initramfs: the rootfs's static busybox, the storage
# and file-system modules (in modprobe's dependency order), e2fsck and distro/init. No udev, no live-boot:
# about 2 MB, and about 2 s of boot under TCG (distro/README.md).
set -euo pipefail
rootfs=$1 kver=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "$(dirname "$out")/initramfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Storage for qemu and common x86 boxes (virtio, SATA/AHCI, NVMe, USB, SD/eMMC) and the file
# systems the boot needs. Modules the kernel has built in are skipped by modprobe.
mods=(virtio_pci virtio_blk virtio_scsi sd_mod ahci ata_piix nvme xhci_pci ehci_pci usb_storage uas
  mmc_block sdhci_pci sdhci_acpi ext4 squashfs loop overlay)

mkdir -p "$tmp"/{bin,dev,proc,sys,run,newroot,lib/modules}
cp "$rootfs/bin/busybox" "$tmp/bin/busybox"
if readelf -l "$tmp/bin/busybox" | grep -q 'program interpreter'; then
  echo "the rootfs's busybox is not static (install busybox-static)"
  exit 1
fi
ln -s busybox "$tmp/bin/sh"
# e2fsck for the data partition, with the libraries it links (ldd run inside the rootfs).
cp "$rootfs/sbin/e2fsck" "$tmp/bin/e2fsck"
for lib in $(chroot "$rootfs" ldd /sbin/e2fsck | grep -o '/[^ ]*'); do
  mkdir -p "$tmp$(dirname "$lib")"
  cp -L "$rootfs$lib" "$tmp$lib"
done

: >"$tmp/lib/modules/load"
declare -A seen=()
for m in "${mods[@]}"; do
  # The rootfs's own kmod, in a chroot: it prints paths inside the rootfs.
  deps=$(chroot "$rootfs" /sbin/modprobe -S "$kver" --show-depends "$m")
  while read -r kind path _; do
    path=$rootfs$path
    [ "$kind" = insmod ] || continue
    name=$(basename "$path")
    name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    case "$path" in
      *.xz) xz -dc "$path" >"$tmp/lib/modules/$name" ;;
      *.zst) zstd -qdc "$path" >"$tmp/lib/modules/$name" ;;
      *.gz) gzip -dc "$path" >"$tmp/lib/modules/$name" ;;
      *) cp "$path" "$tmp/lib/modules/$name" ;;
    esac
    echo "$name" >>"$tmp/lib/modules/load"
  done <<<"$deps"
done
echo "modules: $(wc -l <"$tmp/lib/modules/load")"
install -m 0755 "$here/init" "$tmp/init"
(cd "$tmp" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) \
  | gzip -9 >"$out"
ls -l "$out"
