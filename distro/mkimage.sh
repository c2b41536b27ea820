#!/usr/bin/env bash
# mkimage.sh SLOT_DIR OUT.img WORK_DIR: the IOhubOS disk image, without loop devices or mounts:
#   p1 EFI         ESP, FAT32, label IOHUB_BOOT: GRUB for UEFI (removable path) and BIOS, grub.cfg, grubenv
#   p2 iohubboot1  slot A, ext4, label IOHUB_A: SLOT_DIR (VERSION vmlinuz initrd live/ manifest.*)
#   p3 iohubboot2  slot B, empty
#   p4 iohubdata   data, ext4, label IOHUB_DATA, empty (iohubd's first start sets it up)
# GRUB's i386-pc core.img sits in the gap between the GPT and p1; boot.img in the MBR.
# Sizes (MiB) from the environment: IOHUB_ESP_MIB, IOHUB_SLOT_MIB, IOHUB_DATA_MIB.
set -euo pipefail
slot_dir=$1 out=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
esp_mib=${IOHUB_ESP_MIB:-64}
slot_mib=${IOHUB_SLOT_MIB:-1024}
data_mib=${IOHUB_DATA_MIB:-256}
rm -rf "$work"
mkdir -p "$work"

# GRUB, every module built in (no module directory on the ESP).
mods="part_gpt part_msdos fat ext2 search search_label search_fs_uuid normal configfile linux echo
  test loadenv serial terminal sleep cat ls reboot halt gzio all_video"
# shellcheck disable=SC2016 # GRUB's $root, not the shell's
printf 'search --no-floppy --label IOHUB_BOOT --set=root\nset prefix=($root)/boot/grub\n' >"$work/early.cfg"
# shellcheck disable=SC2086 # the module list is words
grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/early.cfg" -p /boot/grub biosdisk $mods
# shellcheck disable=SC2086
grub-mkimage -O x86_64-efi -o "$work/BOOTX64.EFI" -c "$work/early.cfg" -p /boot/grub $mods
core_sectors=$((($(stat -c %s "$work/core.img") + 511) / 512))
((34 + core_sectors <= 2048)) || { echo "core.img ($core_sectors sectors) does not fit before 1 MiB"; exit 1; }

grub-editenv "$work/grubenv" create
grub-editenv "$work/grubenv" set iohub_default=A
mkfs.vfat -F 32 -n IOHUB_BOOT -C "$work/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/boot ::/boot/grub
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$here/grub.cfg" "$work/grubenv" ::/boot/grub/

mkfs.ext4 -q -F -L IOHUB_A -E root_owner=0:0 -d "$slot_dir" "$work/slot.img" "${slot_mib}M"
mkfs.ext4 -q -F -L IOHUB_DATA -E root_owner=0:0 "$work/data.img" "${data_mib}M"

p1=1 p2=$((1 + esp_mib)) p3=$((1 + esp_mib + slot_mib)) p4=$((1 + esp_mib + 2 * slot_mib))
total=$((p4 + data_mib + 1))
rm -f "$out"
truncate -s "${total}M" "$out"
sfdisk --quiet --no-reread --no-tell-kernel "$out" <<EOF
label: gpt
start=${p1}MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI
start=${p2}MiB, size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=iohubboot1
start=${p3}MiB, size=${slot_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=iohubboot2
start=${p4}MiB, size=${data_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=iohubdata
EOF
dd if="$work/esp.img" of="$out" bs=1M seek="$p1" conv=notrunc,sparse status=none
dd if="$work/slot.img" of="$out" bs=1M seek="$p2" conv=notrunc,sparse status=none
dd if="$work/data.img" of="$out" bs=1M seek="$p4" conv=notrunc,sparse status=none

# BIOS: boot.img's first 440 bytes in the MBR (the partition table follows), core.img at LBA 34.
# boot.img loads the sector at its kernel_sector field (offset 0x5c); core.img's first sector
# (diskboot) loads the rest from its blocklist (start at 0x1f4; grub-mkimage wrote the length).
# shellcheck disable=SC2059 # the format is the byte escape
le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
cp /usr/lib/grub/i386-pc/boot.img "$work/boot.img"
le64 34 | dd of="$work/boot.img" bs=1 seek=$((0x5c)) conv=notrunc status=none
le64 35 | dd of="$work/core.img" bs=1 seek=$((0x1f4)) conv=notrunc status=none
dd if="$work/boot.img" of="$out" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$out" bs=512 seek=34 conv=notrunc status=none
sfdisk --verify "$out"
echo "image: ${total} MiB, p1 ${p1} MiB, p2 ${p2} MiB, p3 ${p3} MiB, p4 ${p4} MiB"
