#!/usr/bin/env bash
# Build the IOhubOS image from Debian 12 packages and this workspace's release build
# (IOHUB_CARGO_PROFILE=dev: its dev build, as CI does).
#
#   distro/build.sh [--version V] [--key KEY.pem] [--custom DIR]
#
# As root on Debian 12. Writes only under target/distro/ (outputs, work/, logs/) and its cache
# target/distro/cache/ (plus cargo's own target/release or target/debug). Outputs:
#   target/distro/iohub-<V>.img               GPT disk: ESP, slot A (this build), slot B (empty), data
#   target/distro/iohub-<V>-firmware.tgz      upgrade bundle (SPEC 4.7 layout + signed manifest)
#   target/distro/iohub_<V>_amd64.deb         the iohub Debian package installed in the image
# Every step logs to target/distro/logs/<step>.log; a failed step stops the build with its name
# and the tail of its log. See distro/README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$repo/target/distro"
cache="$out/cache"
work="$out/work"
logs="$out/logs"
suite=bookworm
mirror=${IOHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}

version=""
key=""
custom=""
usage() { echo "usage: distro/build.sh [--version V] [--key KEY.pem] [--custom DIR]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --version) version=${2:?}; shift 2 ;;
    --key) key=${2:?}; shift 2 ;;
    --custom) custom=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "build.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$version" ] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.~+-][A-Za-z0-9.+~-]*)?$ ]] \
  || { echo "build.sh: bad version '$version' (x.y.z)" >&2; exit 2; }
if [ -n "$key" ]; then key=$(realpath "$key"); [ -r "$key" ] || { echo "build.sh: cannot read key $key" >&2; exit 2; }; fi
if [ -n "$custom" ]; then custom=$(realpath "$custom"); [ -d "$custom" ] || { echo "build.sh: --custom $custom is not a directory" >&2; exit 2; }; fi
[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap, chroot, file ownership)" >&2; exit 2; }

mkdir -p "$out" "$cache" "$logs" "$work"
step_started=$SECONDS
# step NAME FUNCTION: run FUNCTION with its output in logs/NAME.log; stop the build on failure.
step() {
  local name=$1 t0=$SECONDS
  shift
  printf '== %-10s ' "$name"
  # In the background, not in the `if`: errexit would be ignored inside an `if` condition.
  ("$@") >"$logs/$name.log" 2>&1 &
  if wait $!; then
    echo "ok ($((SECONDS - t0)) s)"
  else
    echo "FAILED"
    echo "build.sh: step '$name' failed; log: $logs/$name.log" >&2
    tail -n 40 "$logs/$name.log" >&2
    exit 1
  fi
}

check_tools() {
  local missing=() t
  for t in mmdebstrap mksquashfs grub-mkimage grub-editenv sfdisk mkfs.vfat mmd mcopy mkfs.ext4 \
    openssl dpkg-deb cpio gzip cargo sha256sum strip readelf; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  for t in /usr/lib/grub/i386-pc/boot.img /usr/lib/grub/x86_64-efi/linux.mod; do
    [ -e "$t" ] || missing+=("$t")
  done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]}"
    echo "apt-get install mmdebstrap squashfs-tools grub-pc-bin grub-efi-amd64-bin grub-common fdisk dosfstools mtools e2fsprogs openssl cpio"
    return 1
  fi
}

target_dir=${CARGO_TARGET_DIR:-$repo/target}
# IOHUB_CARGO_PROFILE: `release` (the default, what ships) or `dev` (the binaries a test run has
# just built: scripts/test.sh uses it to keep CI within its time budget; see distro/README.md).
profile=${IOHUB_CARGO_PROFILE:-release}
case "$profile" in
  release) profile_dir=release ;;
  dev) profile_dir=debug ;;
  *) echo "build.sh: IOHUB_CARGO_PROFILE must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
cargo_build() {
  cd "$repo"
  if [ "$profile" = dev ]; then
    # The workspace's feature set, as the test run built it: nothing is rebuilt.
    nice -n 10 cargo build --locked --workspace --bins
  else
    nice -n 10 cargo build --release --locked -p services -p iohubctl --bin iohubd --bin iohubctl
  fi
}

# The iohub Debian package, made with dpkg-deb from the binaries of $profile and distro/deb/.
deb="$out/iohub_${version}_amd64.deb"
make_deb() {
  local d="$work/deb"
  rm -rf "$d"
  mkdir -p "$d/DEBIAN" "$d/usr/bin" "$d/usr/lib/iohub" "$d/lib/systemd/system" "$d/etc/iohub" \
    "$d/usr/share/doc/iohub"
  install -m 0755 "$target_dir/$profile_dir/iohubd" "$target_dir/$profile_dir/iohubctl" "$d/usr/bin/"
  strip --strip-unneeded "$d/usr/bin/iohubd" "$d/usr/bin/iohubctl"
  # The original's firmware tools (SPEC 8.2) are iohubctl under their names.
  for t in iohub-install-firmware iohub-next-partition iohub-set-boot-default; do
    ln -s iohubctl "$d/usr/bin/$t"
  done
  install -m 0644 "$here"/deb/*.service "$d/lib/systemd/system/"
  install -m 0755 "$here/deb/iohub-ready" "$d/usr/lib/iohub/iohub-ready"
  install -m 0755 "$here/deb/iohub-trial-guard" "$d/usr/lib/iohub/iohub-trial-guard"
  install -m 0644 "$here/deb/iohubd.toml" "$d/etc/iohub/iohubd.toml"
  cp -r "$here/seed/." "$d/usr/lib/iohub/"
  find "$d/usr/lib/iohub" -type f ! -name iohub-ready ! -name iohub-trial-guard -exec chmod 0644 {} +
  # /usr/lib/iohub/version: one line, no trailing newline (SPEC 1.1)
  printf 'IOHUBOS_VERSION=%s' "$version" >"$d/usr/lib/iohub/version"
  install -m 0644 "$repo/LICENSE" "$d/usr/share/doc/iohub/copyright" 2>/dev/null \
    || printf 'iohub, Apache-2.0\n' >"$d/usr/share/doc/iohub/copyright"
  printf '/etc/iohub/iohubd.toml\n' >"$d/DEBIAN/conffiles"
  sed -e "s/@VERSION@/$version/" \
    -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$d" | cut -f1)/" "$here/deb/control" >"$d/DEBIAN/control"
  install -m 0755 "$here/deb/postinst" "$here/deb/prerm" "$here/deb/postrm" "$d/DEBIAN/"
  dpkg-deb --root-owner-group -Zgzip -b "$d" "$deb"
  dpkg-deb -I "$deb"
}

# The runtime rootfs, cached as a tarball keyed on the package list and the suite.
pkgs=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages.list" | tr -d ' \t' | sort -u | paste -sd, -)
rootfs_key=$(printf '%s\n%s\n' "$suite" "$pkgs" | sha256sum | cut -c1-16)
rootfs_tar="$cache/rootfs-$suite-$rootfs_key.tar"
make_rootfs() {
  if [ -s "$rootfs_tar" ]; then echo "cached: $rootfs_tar"; return 0; fi
  rm -f "$rootfs_tar.part"
  # Docs, man pages and locales are not installed (the box has no reader for them).
  mmdebstrap --variant=minbase --mode=root --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/info/*' \
    --include="$pkgs" \
    "$suite" "$rootfs_tar.part" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" \
    "deb http://security.debian.org/debian-security $suite-security main"
  mv "$rootfs_tar.part" "$rootfs_tar"
}

rootfs="$work/rootfs"
configure_rootfs() {
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  tar -xf "$rootfs_tar" -C "$rootfs"
  cp "$deb" "$rootfs/tmp/iohub.deb"
  chroot "$rootfs" dpkg -i /tmp/iohub.deb
  rm -f "$rootfs/tmp/iohub.deb"
  # Files of the image (fstab, Docker's data relink, units' drop-ins, hostname, ...).
  cp -r "$here/rootfs/." "$rootfs/"
  ln -sfn /iohub/docker/lib "$rootfs/var/lib/docker"
  mkdir -p "$rootfs/iohub"
  echo iohub >"$rootfs/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tiohub\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
  # SPEC 2.1: the box's services are driven by iohubd, not started by their own units.
  # docker-registry.service would hold port 5000 that iohubd's registry service binds.
  chroot "$rootfs" systemctl disable ssh.service hostapd.service docker-registry.service 2>/dev/null || true
  chroot "$rootfs" systemctl mask wpa_supplicant.service
  chroot "$rootfs" systemctl is-enabled iohubd.service iohub-ready.service
  # Per-box SSH host keys are made by iohubd on the box, never shipped in the image.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  # The firmware public key(s) the box trusts (verified by the firmware service, issue 13).
  mkdir -p "$rootfs/usr/lib/iohub/firmware-keys"
  cp "$work/firmware-key.pub.pem" "$rootfs/usr/lib/iohub/firmware-keys/$key_name.pem"
  # The build-time custom overlay (SPEC 10.2), last, so it can replace anything above.
  if [ -n "$custom" ]; then cp -a "$custom/." "$rootfs/"; fi
  # Trim: apt lists and caches, logs; the machine-id is made at first boot.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  find "$rootfs/var/log" -type f -delete
  : >"$rootfs/etc/machine-id"
  # shellcheck disable=SC2016 # dpkg-query's format, not shell
  chroot "$rootfs" dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\n' >"$work/dpkg.list"
  kver=$(basename "$(ls -d "$rootfs"/lib/modules/*)")
  echo "$kver" >"$work/kver"
}

# Not in the image: drivers a headless edge box has no use for (sound, GPU, cameras, InfiniBand,
# staging, ISDN, industrial I/O, comedi, Bluetooth), cluster and server file systems, and the
# debugging tools and deprecated shim of Docker's packages (dockerd runs containerd-shim-runc-v2).
squashfs_excludes=(boot
  'usr/lib/modules/*/kernel/sound' 'usr/lib/modules/*/kernel/drivers/gpu'
  'usr/lib/modules/*/kernel/drivers/media' 'usr/lib/modules/*/kernel/drivers/infiniband'
  'usr/lib/modules/*/kernel/drivers/staging' 'usr/lib/modules/*/kernel/drivers/isdn'
  'usr/lib/modules/*/kernel/drivers/iio' 'usr/lib/modules/*/kernel/drivers/comedi'
  'usr/lib/modules/*/kernel/net/bluetooth' 'usr/lib/modules/*/kernel/drivers/bluetooth'
  'usr/lib/modules/*/kernel/fs/ocfs2' 'usr/lib/modules/*/kernel/fs/gfs2' 'usr/lib/modules/*/kernel/fs/xfs'
  'usr/lib/modules/*/kernel/fs/btrfs' 'usr/lib/modules/*/kernel/fs/nfsd' 'usr/lib/modules/*/kernel/fs/ceph'
  'usr/lib/modules/*/kernel/fs/f2fs' 'usr/lib/modules/*/kernel/fs/smb'
  # Data-centre hardware (35 MB of already-compressed modules): 10-100 GbE and SmartNICs, Fibre
  # Channel, iSCSI offload and SAS/RAID HBAs, storage targets. Edge boxes' NICs (Intel
  # e1000e/igb/igc/ixgbe/i40e, Realtek, Broadcom tg3, USB) and storage (AHCI, NVMe, virtio, USB,
  # MMC) stay.
  'usr/lib/modules/*/kernel/drivers/net/ethernet/'{mellanox,qlogic,chelsio,sfc,netronome,cavium,huawei,emulex,myricom,neterion,brocade}
  'usr/lib/modules/*/kernel/drivers/net/ethernet/broadcom/bnxt' 'usr/lib/modules/*/kernel/drivers/net/ethernet/intel/ice'
  'usr/lib/modules/*/kernel/drivers/scsi/'{qla2xxx,qla4xxx,lpfc,bfa,qedf,qedi,bnx2fc,bnx2i,csiostor,fnic,snic,be2iscsi,cxgbi,megaraid,mpt3sas,aacraid,smartpqi,pm8001,mpi3mr,isci,hpsa.ko}
  'usr/lib/modules/*/kernel/drivers/target' 'usr/lib/modules/*/kernel/drivers/nvme/target'
  usr/bin/dnet usr/bin/ctr usr/bin/containerd-shim-runc-v1)
squashfs() {
  rm -f "$work/filesystem.squashfs"
  # zstd with 1 MiB blocks: about 10 % larger than xz and about 30 % faster to boot under TCG.
  # IOHUB_SQUASHFS_LEVEL (default 15) trades build time for size while iterating.
  # -e takes every argument after it: it must be last.
  # IOHUB_SQUASHFS_COMP=xz: xz with the x86 BCJ filter, about 20 % smaller (docs/benchmarks.md),
  # several times slower to build and slower to boot under TCG.
  local comp=(-comp zstd -Xcompression-level "${IOHUB_SQUASHFS_LEVEL:-15}")
  case "${IOHUB_SQUASHFS_COMP:-zstd}" in
    zstd) ;;
    xz) comp=(-comp xz -Xbcj x86) ;;
    *) echo "IOHUB_SQUASHFS_COMP must be zstd or xz"; return 1 ;;
  esac
  mksquashfs "$rootfs" "$work/filesystem.squashfs" -noappend "${comp[@]}" \
    -b 1M -no-xattrs -wildcards -e "${squashfs_excludes[@]}"
  if unsquashfs -l "$work/filesystem.squashfs" | grep -Eq 'kernel/sound/|ethernet/mellanox/'; then
    echo "the exclusions did not apply"
    return 1
  fi
}

initramfs() {
  local kver
  kver=$(cat "$work/kver")
  "$here/mkinitramfs.sh" "$rootfs" "$kver" "$work/initrd"
  cp "$rootfs/boot/vmlinuz-$kver" "$work/vmlinuz"
}

# The firmware signing key: --key, else a development key kept in the cache so that every
# development build trusts (and is trusted by) the others.
key_name=""
signing_key() {
  local k=$key
  if [ -z "$k" ]; then
    k="$cache/development-firmware-key.pem"
    [ -s "$k" ] || openssl genpkey -algorithm ed25519 -out "$k"
    chmod 0600 "$k"
  fi
  openssl pkey -in "$k" -pubout -out "$work/firmware-key.pub.pem"
  cp "$k" "$work/firmware-key.pem"
  chmod 0600 "$work/firmware-key.pem"
}

bundle_dir="$work/bundle"
bundle="$out/iohub-$version-firmware.tgz"
make_bundle() {
  rm -rf "$bundle_dir"
  mkdir -p "$bundle_dir/live"
  printf '%s' "$version" >"$bundle_dir/VERSION"
  cp "$work/vmlinuz" "$bundle_dir/vmlinuz"
  cp "$work/initrd" "$bundle_dir/initrd"
  cp "$work/filesystem.squashfs" "$bundle_dir/live/filesystem.squashfs"
  "$here/manifest.sh" "$bundle_dir" "$version" "$work/dpkg.list" "$work/firmware-key.pem" \
    "$([ -n "$key" ] && echo release || echo development)" \
    "suite=$suite" "rootfs_key=$rootfs_key" "kernel=$(cat "$work/kver")" "cargo_profile=$profile"
  openssl pkeyutl -verify -pubin -inkey "$work/firmware-key.pub.pem" -rawin \
    -in "$bundle_dir/manifest.json" -sigfile "$bundle_dir/manifest.sig"
  # The squashfs is already compressed: gzip -1 keeps the original's .tgz at little cost.
  tar -C "$bundle_dir" -cf - VERSION vmlinuz initrd live manifest.json manifest.sig | gzip -1 >"$bundle.part"
  mv "$bundle.part" "$bundle"
  ls -l "$bundle"
}

image="$out/iohub-$version.img"
make_image() {
  "$here/mkimage.sh" "$bundle_dir" "$image.part" "$work/image"
  mv "$image.part" "$image"
  ls -ls "$image"
}

echo "iohub image $version (rootfs key $rootfs_key) -> $out"
step check check_tools
step cargo cargo_build
step deb make_deb
step rootfs make_rootfs
step key signing_key
key_name=$(openssl pkey -pubin -in "$work/firmware-key.pub.pem" -outform DER | sha256sum | cut -c1-16)
[ -n "$key" ] || key_name="$key_name.development"
step configure configure_rootfs
step squashfs squashfs
step initramfs initramfs
step bundle make_bundle
step image make_image
echo "built in $((SECONDS - step_started)) s: $image $bundle"
