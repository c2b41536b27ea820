#!/usr/bin/env bash
# `check && pass ... || fail ...` is safe in this file: pass only prints.
# shellcheck disable=SC2015
# The distro tests (called by scripts/test.sh after the cargo tests; as root on Debian 12):
#   build    distro/build.sh: the image, the bundle, its signed manifest
#   bios     BIOS boot to `iohub-ready ... slot=A`, every service applied or disabled; a config
#            edit made on the box survives a reboot, a write to the root does not
#   uefi     the same image by UEFI (OVMF) to `iohub-ready ... slot=A`, services settled
#   fallback slot B armed for a trial but broken: GRUB tries it 3 times, then the box is back on A
#   installer iohub-installer on disk image files: refusals, then an install that boots
# One image is built and copied (sparse) for each boot; boots run in two lanes at once
# (IOHUB_DISTRO_LANES), each bounded. Under CI=true a missing qemu, OVMF or mmdebstrap fails the run instead of skipping it.
#   distro/test.sh [--no-build] [TEST...]   (default: all, in the order above; --no-build checks
#   the image and bundle already in target/distro instead of building them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$repo/target/distro"
tdir="$out/test"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
img="$out/iohub-$version.img"
bundle="$out/iohub-$version-firmware.tgz"
boot_limit=${IOHUB_BOOT_LIMIT_SECS:-300}

missing=()
for t in mmdebstrap qemu-system-x86_64 mksquashfs grub-mkimage mcopy sfdisk mkfs.ext4 debugfs openssl; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing+=(OVMF)
if ((${#missing[@]})); then
  if [ "${CI:-}" = true ]; then
    echo "distro tests: FAILED: missing ${missing[*]} (CI=true: a missing prerequisite is a failure)" >&2
    exit 1
  fi
  echo "distro tests: SKIPPED: missing ${missing[*]} (scripts/test.sh installs them)" >&2
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "distro tests: run as root" >&2; exit 1; }

failures=()
fail() { echo "  FAIL: $*"; failures+=("$current: $*"); }
pass() { echo "  ok: $*"; }

# boot NAME IMG PATTERN [qemu.sh options]: boot IMG with the serial console in $tdir/NAME.log until
# PATTERN (extended regex) shows, or the bound, or qemu ends. Returns 0 when PATTERN showed.
# qemu runs in a process group of its own, which is ended by its id.
boot() {
  local image=$2 pattern=$3 log="$tdir/$1.log" pid t0
  shift 3
  : >"$log"
  ready_ms=""
  t0=$(date +%s%N)
  setsid "$here/qemu.sh" "$image" --timeout "$boot_limit" "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  qemu_group=$pid
  while kill -0 "$pid" 2>/dev/null && (($(date +%s%N) - t0 < (boot_limit + 10) * 1000000000)); do
    if [ -z "$ready_ms" ] && grep -aq 'iohub-ready version=' "$log"; then
      ready_ms=$((($(date +%s%N) - t0) / 1000000))
      echo "  (iohub-ready after $((ready_ms / 1000)).$((ready_ms % 1000 / 100)) s)"
    fi
    if grep -Eaq "$pattern" "$log"; then
      boot_secs=$((($(date +%s%N) - t0) / 1000000000))
      kill -- "-$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 0
    fi
    sleep 0.2
  done
  kill -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  boot_secs=$((($(date +%s%N) - t0) / 1000000000))
  grep -Eaq "$pattern" "$log"
}

# check_status LOG: the `iohub-status` line says settled and every service applied or disabled.
check_status() {
  local line bad
  line=$(grep -ao 'iohub-status settled=.*' "$1" | tail -n1 | tr -d '\r' || true)
  if [ -z "$line" ]; then fail "no iohub-status line"; return; fi
  bad=$(echo "$line" | tr ' ' '\n' | grep '=' | grep -v '^settled=' | grep -Ev '=(applied|disabled)$' || true)
  if [[ "$line" == *"settled=yes"* ]] && [ -z "$bad" ] && [[ "$line" == *"config=applied"* ]]; then
    pass "services: ${line#iohub-status }"
  else
    fail "services not all applied/disabled: $line"
  fi
}

# fresh NAME: a sparse copy of the built image for one test.
fresh() { cp --sparse=always "$img" "$tdir/$1.img"; echo "$tdir/$1.img"; }

mib=$((1024 * 1024))
# Partition start (bytes) of partition N of an image.
part_field() { sfdisk -J "$1" | tr -d ' \n' | grep -o "\"$3\":[0-9]*" | sed -n "${2}p" | cut -d: -f2; }
part_start() { echo $(($(part_field "$1" "$2" start) * 512)); }
part_size_mib() { echo $(($(part_field "$1" "$2" size) * 512 / mib)); }
grubenv_get() { MTOOLS_SKIP_CHECK=1 mtype -i "$1@@$(part_start "$1" 1)" ::/boot/grub/grubenv | tr -d '#' | grep -v '^$'; }
grubenv_set() {
  local image=$1 at
  shift
  at=$(part_start "$image" 1)
  MTOOLS_SKIP_CHECK=1 mcopy -o -i "$image@@$at" ::/boot/grub/grubenv "$tdir/$current-grubenv"
  grub-editenv "$tdir/$current-grubenv" set "$@"
  MTOOLS_SKIP_CHECK=1 mcopy -o -i "$image@@$at" "$tdir/$current-grubenv" ::/boot/grub/grubenv
}
# Read a file of partition N (ext4) of an image without mounting it.
ext4_cat() {
  local image=$1 n=$2 path=$3
  dd if="$image" of="$tdir/$current-part.img" bs=1M skip=$(($(part_start "$image" "$n") / mib)) \
    count="$(part_size_mib "$image" "$n")" conv=sparse status=none
  debugfs -R "cat $path" "$tdir/$current-part.img" 2>/dev/null
}

t_build() {
  local t0=$SECONDS
  if ((no_build)); then
    pass "not built (--no-build): checking the existing image and bundle"
  elif "$here/build.sh" >"$tdir/build.log" 2>&1; then
    pass "build.sh in $((SECONDS - t0)) s"
  else
    fail "build.sh failed (log: $tdir/build.log)"
    tail -n 30 "$tdir/build.log"
    return 1
  fi
  ((no_build)) || grep '^== ' "$tdir/build.log" | sed 's/^/    /'
  [ -f "$img" ] && [ -f "$bundle" ] || { fail "no image or bundle"; return 1; }
  # The bundle: the original's layout plus a manifest whose signature and hashes hold.
  rm -rf "$tdir/bundle"
  mkdir -p "$tdir/bundle"
  tar -xzf "$bundle" -C "$tdir/bundle"
  local names
  names=$(tar -tzf "$bundle" | sort | tr '\n' ' ')
  [ "$names" = "VERSION initrd live/ live/filesystem.squashfs manifest.json manifest.sig vmlinuz " ] \
    && pass "bundle layout: $names" || fail "bundle layout: $names"
  [ "$(cat "$tdir/bundle/VERSION")" = "$version" ] && pass "VERSION $version" || fail "VERSION $(cat "$tdir/bundle/VERSION")"
  if openssl pkey -in "$out/cache/development-firmware-key.pem" -pubout -out "$tdir/pub.pem" 2>/dev/null \
    && openssl pkeyutl -verify -pubin -inkey "$tdir/pub.pem" -rawin -in "$tdir/bundle/manifest.json" \
      -sigfile "$tdir/bundle/manifest.sig" >/dev/null; then
    pass "manifest signature verifies with the development key"
  else
    fail "manifest signature does not verify"
  fi
  cp "$tdir/bundle/manifest.json" "$tdir/tampered.json"
  sed -i "s/\"version\": \"$version\"/\"version\": \"9.9.9\"/" "$tdir/tampered.json"
  if openssl pkeyutl -verify -pubin -inkey "$tdir/pub.pem" -rawin -in "$tdir/tampered.json" \
    -sigfile "$tdir/bundle/manifest.sig" >/dev/null 2>&1; then
    fail "a tampered manifest verifies"
  else
    pass "a tampered manifest does not verify"
  fi
  local f sum ok=1
  for f in VERSION vmlinuz initrd live/filesystem.squashfs; do
    sum=$(sha256sum "$tdir/bundle/$f" | cut -d' ' -f1)
    grep -q "\"$f\": {\"sha256\": \"$sum\"" "$tdir/bundle/manifest.json" || { ok=0; fail "manifest hash of $f"; }
  done
  ((ok)) && pass "manifest SHA-256s match the files"
  grep -q '"development": true' "$tdir/bundle/manifest.json" && grep -q '\["iohub", "'"$version"'", "amd64"\]' "$tdir/bundle/manifest.json" \
    && grep -q '\["docker.io", ' "$tdir/bundle/manifest.json" \
    && pass "manifest marks the development key and lists the packages (iohub $version, docker.io)" \
    || fail "manifest key mark or package list"
}

t_bios() {
  local image log boot_limit=$((boot_limit * 2)) # two boots
  image=$(fresh bios)
  # The data partition carries a bootstrap hook (the box's own mechanism) that starts a probe
  # outside iohubd: boot 1 edits the config through iohubctl and writes to the root, then reboots;
  # boot 2 reports what survived and powers off.
  rm -rf "$tdir/data"
  mkdir -p "$tdir/data/runtime/iohub-bootstrap"
  cat >"$tdir/data/runtime/iohub-bootstrap/end" <<'EOF'
#!/bin/sh
systemd-run --no-block --unit=iohub-test-probe /bin/sh /iohub/test-probe.sh
EOF
  cat >"$tdir/data/test-probe.sh" <<'EOF'
#!/bin/sh
say() { echo "$*" >/dev/console; }
i=0
while [ "$i" -lt 300 ] && ! systemctl -q is-active iohub-ready.service; do sleep 1; i=$((i + 1)); done
if [ ! -e /iohub/test-boot1 ]; then
  out=$(iohubctl --timeout 120 set IOHUBOS_TIMEZONE=Europe/Rome 2>&1)
  rc=$?
  echo written-on-the-root >/etc/iohub-test-root-write
  echo 1 >/iohub/test-boot1
  sync
  say "iohub-test boot=1 set=$rc $(echo "$out" | tr '\n' ' ')"
  systemctl reboot
else
  tz=$(grep '^IOHUBOS_TIMEZONE=' /iohub/envvars | tr -d "'\"")
  root=absent
  [ -e /etc/iohub-test-root-write ] && root=present
  say "iohub-test boot=2 data=$(findmnt -n -o SOURCE,FSTYPE /iohub | tr ' ' ,) $tz root-write=$root localtime=$(readlink /etc/localtime)"
  systemctl poweroff
fi
EOF
  chmod 0755 "$tdir/data/runtime/iohub-bootstrap/end"
  mkfs.ext4 -q -F -L IOHUB_DATA -E "offset=$(part_start "$image" 4),root_owner=0:0" -d "$tdir/data" \
    "$image" "$(part_size_mib "$image" 4)M"
  log="$tdir/bios.log"
  if boot bios "$image" 'iohub-test boot=2'; then
    pass "two BIOS boots and the probe in $boot_secs s"
  else
    fail "no second boot report within the bound (log: $log)"
    tail -n 30 "$log"
  fi
  local ready first
  ready=$(grep -ao 'iohub-ready version=[^ ]* slot=[^ ]*' "$log" | head -n1 | tr -d '\r' || true)
  [ "$ready" = "iohub-ready version=$version slot=A" ] && pass "$ready" || fail "ready line: '$ready'"
  first=$(grep -an 'iohub-ready version=' "$log" | head -n1 | cut -d: -f1 || true)
  head -n "${first:-0}" "$log" >"$tdir/bios-boot1.log"
  check_status "$log"
  grep -ao 'iohub-test boot=1.*' "$log" | grep -q 'set=0' && pass "config edit through iohubctl on boot 1" \
    || fail "config edit on boot 1: $(grep -ao 'iohub-test boot=1.*' "$log" | cut -c1-200)"
  local report
  report=$(grep -ao 'iohub-test boot=2.*' "$log" | tr -d '\r' || true)
  [[ "$report" == *"IOHUBOS_TIMEZONE=Europe/Rome"* ]] && pass "the config edit survived the reboot" || fail "config edit lost: $report"
  [[ "$report" == *"root-write=absent"* ]] && pass "the root write did not survive the reboot" || fail "root write kept: $report"
  [[ "$report" == *"data=/dev/vda4,ext4"* ]] && pass "data partition mounted at /iohub" || fail "data partition: $report"
  [[ "$report" == *"localtime=/usr/share/zoneinfo/Europe/Rome"* ]] && pass "the time zone applied after the reboot" \
    || fail "time zone: $report"
  [ "$(grep -ac 'iohub-ready version=' "$log")" -ge 2 ] && pass "ready on both boots" || fail "ready on the second boot"
  # Docker's data is relinked into the data partition.
  ext4_cat "$image" 4 /test-boot1 | grep -q 1 && pass "the probe's file is on the data partition" \
    || fail "the probe's file is not on the data partition"
}

t_uefi() {
  local image log boot_limit=$((boot_limit * 2)) # a boot and up to 180 s of settling
  image=$(fresh uefi)
  log="$tdir/uefi.log"
  if boot uefi "$image" 'iohub-status settled=' --uefi; then
    pass "UEFI boot to ready and settled in $boot_secs s"
  else
    fail "UEFI boot did not reach iohub-status (log: $log)"
    tail -n 30 "$log"
  fi
  local ready
  ready=$(grep -ao 'iohub-ready version=[^ ]* slot=[^ ]*' "$log" | head -n1 | tr -d '\r' || true)
  [ "$ready" = "iohub-ready version=$version slot=A" ] && pass "$ready" || fail "ready line: '$ready'"
  check_status "$log"
}

t_fallback() {
  local image log boot_limit=$((boot_limit * 2)) # three failed tries and a boot
  image=$(fresh fallback)
  # Slot B: the real kernel and initramfs, a squashfs of garbage.
  rm -rf "$tdir/slotb"
  mkdir -p "$tdir/slotb/live"
  cp "$tdir/bundle/vmlinuz" "$tdir/bundle/initrd" "$tdir/slotb/"
  printf '9.9.9' >"$tdir/slotb/VERSION"
  head -c 4M /dev/urandom >"$tdir/slotb/live/filesystem.squashfs"
  mkfs.ext4 -q -F -L IOHUB_B -E "offset=$(part_start "$image" 3),root_owner=0:0" -d "$tdir/slotb" \
    "$image" "$(part_size_mib "$image" 3)M"
  grubenv_set "$image" iohub_default=A iohub_trial=B iohub_trial_left=3
  log="$tdir/fallback.log"
  if boot fallback "$image" 'iohub-ready version='; then
    pass "back to ready in $boot_secs s"
  else
    fail "no ready after the broken trial (log: $log)"
    tail -n 30 "$log"
  fi
  local tries
  tries=$(grep -ac 'iohub-grub default=A trial=B left=[0-2] boot=B' "$log" || true)
  [ "$tries" = 3 ] && pass "GRUB tried slot B 3 times" || fail "GRUB tried slot B $tries times"
  grep -aq 'iohub-initramfs: slot B: cannot mount live/filesystem.squashfs' "$log" \
    && pass "slot B failed in its initramfs and rebooted" || fail "no initramfs failure of slot B"
  grep -aq 'iohub-grub default=A trial= left=0 boot=A' "$log" && pass "GRUB dropped the trial and booted A" \
    || fail "no fallback line"
  local ready
  ready=$(grep -ao 'iohub-ready version=[^ ]* slot=[^ ]*' "$log" | tr -d '\r' || true)
  [ "$ready" = "iohub-ready version=$version slot=A" ] && pass "$ready" || fail "ready line: '$ready'"
  local env
  env=$(grubenv_get "$image" | tr '\n' ' ' || true)
  [[ "$env" == *"iohub_default=A"* && "$env" == *"iohub_trial= "* ]] && pass "grubenv after: $env" \
    || fail "grubenv after: $env"
}

t_installer() {
  local inst="$here/rootfs/usr/sbin/iohub-installer" target="$tdir/installed.img" o eth
  local opts=(--source-disk "$img" --slot-dir "$tdir/bundle")
  eth=$(ip -o route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
  [ -n "$eth" ] || eth=lo
  # Refusals.
  rm -f "$tdir/small.img"
  truncate -s 1G "$tdir/small.img"
  if o=$("$inst" "${opts[@]}" "$tdir/small.img" "$eth" </dev/null 2>&1); then fail "installed on a 1 GiB disk"
  else [[ "$o" == *"too small"* ]] && pass "refuses a too small disk: $o" || fail "small disk: $o"; fi
  if o=$("$inst" "${opts[@]}" "$img" "$eth" </dev/null 2>&1); then fail "installed on the disk it runs from"
  else [[ "$o" == *"runs from"* ]] && pass "refuses the disk it runs from: $o" || fail "source disk: $o"; fi
  rm -f "$tdir/mounted.img"
  truncate -s 3G "$tdir/mounted.img"
  local loop
  loop=$(losetup -f --show "$tdir/mounted.img")
  mkfs.ext4 -q "$loop"
  mkdir -p "$tdir/mnt"
  mount "$loop" "$tdir/mnt"
  if o=$("$inst" "${opts[@]}" "$loop" "$eth" </dev/null 2>&1); then fail "installed on a mounted disk"
  else [[ "$o" == *"is mounted"* ]] && pass "refuses a mounted disk: $o" || fail "mounted disk: $o"; fi
  if o=$("$inst" "${opts[@]}" "$tdir/mounted.img" "$eth" </dev/null 2>&1); then fail "installed on a file in use"
  else [[ "$o" == *"in use"* ]] && pass "refuses a disk image in use by a loop device: $o" || fail "file in use: $o"; fi
  umount "$tdir/mnt"
  losetup -d "$loop"
  rm -f "$tdir/mounted.img"
  # An install, non-interactive (stdin is not a terminal), with a password hash.
  rm -f "$target"
  truncate -s 3G "$target"
  local hash
  hash=$(printf 'iohub-test\n' | openssl passwd -6 -stdin)
  if timeout 300 "$inst" "${opts[@]}" --password-hash "$hash" "$target" "$eth" </dev/null >"$tdir/installer.log" 2>&1; then
    pass "installed on a 3 GiB disk image: $(tail -n1 "$tdir/installer.log")"
  else
    fail "installer failed: $(tail -n5 "$tdir/installer.log")"
    return
  fi
  local names
  names=$(sfdisk -J "$target" | grep -o '"name": *"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ' || true)
  [ "$names" = "EFI iohubboot1 iohubboot2 iohubdata " ] && pass "partitions: $names" || fail "partitions: $names"
  local mac sysvars
  mac=$(tr -d ':\n' <"/sys/class/net/$eth/address")
  sysvars=$(ext4_cat "$target" 4 /sysvars || true)
  [[ "$sysvars" == *"IOHUBOS_ETH0_DEVICE=\"$eth\""* && "$sysvars" == *"IOHUBOS_HOSTNAME=\"iohub-$mac\""* ]] \
    && pass "sysvars: $(echo "$sysvars" | grep -v '^#' | tr '\n' ' ')" || fail "sysvars: $sysvars"
  ext4_cat "$target" 4 /runtime/iohub-bootstrap/postsetup | grep -qF "root:$hash" \
    && pass "postsetup hook sets root's password" || fail "no password hook"
  ext4_cat "$target" 2 /VERSION | grep -qx "$version" && pass "slot A holds $version" || fail "slot A version"
  # The installed disk boots (BIOS) to ready on slot A.
  if boot installed "$target" 'iohub-ready version='; then
    local ready
    ready=$(grep -ao 'iohub-ready version=[^ ]* slot=[^ ]*' "$tdir/installed.log" | tr -d '\r' || true)
    [ "$ready" = "iohub-ready version=$version slot=A" ] && pass "the installed disk boots: $ready ($boot_secs s)" \
      || fail "installed ready line: '$ready'"
  else
    fail "the installed disk did not boot to ready (log: $tdir/installed.log)"
  fi
}

mkdir -p "$tdir"
# An interrupted run ends the boots in progress (each in a process group of its own) too.
qemu_group=""
trap '[ -z "$qemu_group" ] || kill -- "-$qemu_group" 2>/dev/null || true' EXIT
no_build=0
if [ "${1:-}" = --no-build ]; then no_build=1; shift; fi
tests=("$@")
((${#tests[@]})) || tests=(bios uefi fallback installer)
for t in "${tests[@]}"; do
  declare -F "t_$t" >/dev/null || { echo "unknown test $t" >&2; exit 2; }
done
current=build
echo "== distro: build"
if ! t_build; then
  echo "distro tests: FAILED (the build)" >&2
  exit 1
fi

# run_one TEST: the test in a subshell of its own, its output in $tdir/TEST.out, its failures in
# $tdir/TEST.failed, printed whole when it ends (so lanes do not interleave lines).
run_one() {
  # shellcheck disable=SC2030,SC2031 # each test keeps its own failures; they come back by file
  (
    failures=()
    qemu_group=""
    trap '[ -z "$qemu_group" ] || kill -- "-$qemu_group" 2>/dev/null || true' EXIT
    trap 'exit 130' INT TERM
    current=$1
    echo "== distro: $current"
    "t_$current"
    rm -f "$tdir/$current.img" "$tdir/$current-part.img" "$tdir/$current-grubenv"
    ((${#failures[@]} == 0)) || printf '%s\n' "${failures[@]}" >"$tdir/$current.failed"
  ) >"$tdir/$1.out" 2>&1 || echo "$1: ended with status $?" >>"$tdir/$1.failed"
  flock "$tdir/.print" cat "$tdir/$1.out"
}
# The boots run in IOHUB_DISTRO_LANES lanes at once (default 2: qemu's TCG keeps one core busy per
# guest, and the machine kind has two); test i goes to lane i mod lanes, in the order given.
lanes=${IOHUB_DISTRO_LANES:-2}
rm -f "$tdir"/*.failed "$tdir"/*.out
# kill_tree PID: PID and its descendants (the lanes, their tests, their qemu).
kill_tree() {
  local c
  for c in $(pgrep -P "$1" || true); do kill_tree "$c"; done
  kill "$1" 2>/dev/null || true
}
end_lanes() {
  local lp
  for lp in "${lane_pids[@]}"; do kill_tree "$lp"; done
}
lane_pids=()
trap end_lanes EXIT
for ((l = 0; l < lanes; l++)); do
  (
    for ((i = l; i < ${#tests[@]}; i += lanes)); do run_one "${tests[i]}"; done
  ) &
  lane_pids+=($!)
done
wait
lane_pids=()
rm -f "$tdir/installed.img" "$tdir/small.img"
# shellcheck disable=SC2031
for t in "${tests[@]}"; do
  [ ! -s "$tdir/$t.failed" ] || mapfile -t -O "${#failures[@]}" failures <"$tdir/$t.failed"
done
if ((${#failures[@]})); then
  echo "distro tests: ${#failures[@]} FAILED:" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "distro tests: ok"
