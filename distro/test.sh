#!/usr/bin/env bash
# `check && pass ... || fail ...` is safe in this file: pass only prints.
# shellcheck disable=SC2015
# The distro tests (called by scripts/test.sh after the cargo tests; as root on Debian 12):
#   build    distro/build.sh: the image, the bundle, its signed manifest
#   upgrade  the firmware service end to end: N+1 dropped on a box running N, installed into slot
#            B, committed after its trial boot; then an N+2 whose firewall never applies, rolled
#            back to B by itself
#   bios     BIOS boot to `iohub-ready ... slot=A`, every service applied or disabled; a config
#            edit made on the box survives a reboot, a write to the root does not
#   uefi     the same image by UEFI (OVMF) to `iohub-ready ... slot=A`, services settled
#   fallback slot B armed for a trial but broken: GRUB tries it 3 times, then the box is back on A
#   installer iohub-installer on disk image files: refusals, then an install that boots
# One image is built and copied (sparse) for each boot; the tests run one after the other, or in
# IOHUB_DISTRO_LANES lanes at once, each boot bounded. Under CI=true a missing qemu, OVMF or mmdebstrap fails
# the run instead of skipping it.
#   distro/test.sh [--no-build] [TEST...]   (default: all but upgrade, in the order above; upgrade
#   runs when named, see distro/README.md; --no-build checks the image and bundle already in
#   target/distro instead of building them)
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
mark_pattern="" # boot() records when this shows first, in mark_ms (ms after qemu started)
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
  mark_ms=""
  t0=$(date +%s%N)
  setsid "$here/qemu.sh" "$image" --timeout "$boot_limit" "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  qemu_group=$pid
  while kill -0 "$pid" 2>/dev/null && (($(date +%s%N) - t0 < (boot_limit + 10) * 1000000000)); do
    if [ -z "$ready_ms" ] && grep -aq 'iohub-ready version=' "$log"; then
      ready_ms=$((($(date +%s%N) - t0) / 1000000))
      echo "  (iohub-ready after $((ready_ms / 1000)).$((ready_ms % 1000 / 100)) s)"
    fi
    if [ -n "$mark_pattern" ] && [ -z "$mark_ms" ] && grep -aq "$mark_pattern" "$log"; then
      mark_ms=$((($(date +%s%N) - t0) / 1000000))
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

# t_upgrade: the firmware service on the image, end to end. Versions N+1 and N+2 are built with
# build.sh --version (N+2 with a --custom overlay whose `nft` always fails, so its firewall can
# never be applied). The box boots N on slot A with N+1 already dropped in /iohub/firmware:
#   boot 1 (A, N)    installs N+1 into slot B, arms a trial, reboots;
#   boot 2 (B, N+1)  every service applied: committed; the probe then drops N+2 (cp, as scp would);
#                    installed into slot A, trial armed, reboot;
#   boot 3 (A, N+2)  the firewall never applies: after IOHUBOS_UPGRADER_HEALTH_SECS (900 s for
#                    the trial of N+1 on a loaded host, set to 150 s through iohubctl before N+2
#                    is dropped) the service rolls back by itself, publishing why, and reboots;
#   boot 4 (B, N+1)  the probe reports grubenv and powers off.
t_upgrade() {
  local image log boot_limit=1800 v1 v2 t0 major minor patch
  IFS=. read -r major minor patch <<<"${version%%[-+~]*}"
  v1="$major.$minor.$((patch + 1))"
  v2="$major.$minor.$((patch + 2))"
  rm -rf "$tdir/broken"
  mkdir -p "$tdir/broken/usr/sbin"
  printf '#!/bin/sh\necho "nft: broken on purpose by the distro test overlay" >&2\nexit 1\n' \
    >"$tdir/broken/usr/sbin/nft"
  chmod 0755 "$tdir/broken/usr/sbin/nft"
  t0=$SECONDS
  # Bundles newer than N's are of this build of N: kept (a re-run of this test alone).
  if [ "$out/iohub-$v1-firmware.tgz" -nt "$bundle" ] && [ "$out/iohub-$v2-firmware.tgz" -nt "$bundle" ]; then
    pass "$v1 and $v2 already built after $version: kept"
  elif "$here/build.sh" --version "$v1" >"$tdir/build-$v1.log" 2>&1 \
    && "$here/build.sh" --version "$v2" --custom "$tdir/broken" >"$tdir/build-$v2.log" 2>&1; then
    pass "built $v1 and $v2 (nft broken) in $((SECONDS - t0)) s"
  else
    fail "build of $v1 or $v2 failed (logs: $tdir/build-$v1.log $tdir/build-$v2.log)"
    return
  fi
  rm -f "$out/iohub-$v1.img" "$out/iohub-$v2.img"
  image=$(fresh upgrade)
  # The data partition grows to 1 GiB: a drop and its staging copy do not fit in the image's 256 MiB.
  truncate -s +768M "$image"
  { sfdisk -q --relocate gpt-bak-std "$image" && echo ',+' | sfdisk -q --no-reread --no-tell-kernel -N 4 "$image"; } \
    >"$tdir/upgrade-sfdisk.log" 2>&1 || { fail "growing the data partition: $(cat "$tdir/upgrade-sfdisk.log")"; return; }
  rm -rf "$tdir/updata"
  mkdir -p "$tdir/updata/runtime/iohub-bootstrap" "$tdir/updata/firmware" "$tdir/updata/test-stash"
  cp "$out/iohub-$v1-firmware.tgz" "$tdir/updata/firmware/"
  cp "$out/iohub-$v2-firmware.tgz" "$tdir/updata/test-stash/"
  { cat "$here/seed/envvars"; echo "IOHUBOS_UPGRADER_HEALTH_SECS='900'"; } >"$tdir/updata/envvars"
  printf '#!/bin/sh\nsystemd-run --no-block --unit=iohub-test-probe /bin/sh /iohub/test-probe.sh\n' \
    >"$tdir/updata/runtime/iohub-bootstrap/end"
  chmod 0755 "$tdir/updata/runtime/iohub-bootstrap/end"
  # The probe (PROBE_V1/PROBE_V2 replaced below): on N+1, waits for the commit then drops N+2; back
  # on N+1 after the rollback, reports and powers off.
  sed -e "s/PROBE_V1/$v1/g" -e "s/PROBE_V2/$v2/g" >"$tdir/updata/test-probe.sh" <<'PROBE'
#!/bin/sh
say() { echo "$*" >/dev/console; }
env=/boot/efi/boot/grub/grubenv
grubenv() { tr -d '#' <$env | grep '^iohub_' | tr '\n' ' '; }
ver=$(sed -n 's/^IOHUBOS_VERSION=//p' /usr/lib/iohub/version)
slot=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^iohub.slot=//p')
say "iohub-test upgrade boot slot=$slot version=$ver grubenv: $(grubenv)"
# iohubd restarted (the hook runs at every start): why, from its journal.
if [ "$(systemctl show -p NRestarts --value iohubd.service)" != 0 ]; then
  journalctl -b -u iohubd.service --no-pager -o short-monotonic | grep -v ' INFO ' | tail -n 12 \
    | sed 's/^/iohub-test journal: /' >/dev/console
fi
[ "$ver" = PROBE_V1 ] || exit 0
if [ ! -e /iohub/test-dropped ]; then
  i=0
  while [ "$i" -lt 900 ] && ! grep -q '^iohub_default=B' $env; do sleep 1; i=$((i + 1)); done
  say "iohub-test committed: $(grubenv)"
  # N+2's firewall never applies: its trial need not be waited for as long.
  say "iohub-test set: $(iohubctl --timeout 120 set IOHUBOS_UPGRADER_HEALTH_SECS=150 >/dev/null 2>&1; echo $?)"
  echo 1 >/iohub/test-dropped
  sync
  cp /iohub/test-stash/iohub-PROBE_V2-firmware.tgz /iohub/firmware/
else
  say "iohub-test back slot=$slot version=$ver grubenv: $(grubenv)"
  systemctl poweroff
fi
PROBE
  mkfs.ext4 -q -F -L IOHUB_DATA -E "offset=$(part_start "$image" 4),root_owner=0:0" -d "$tdir/updata" \
    "$image" "$(part_size_mib "$image" 4)M"
  rm -rf "$tdir/updata"
  log="$tdir/upgrade.log"
  mark_pattern="iohub-firmware committed"
  if boot upgrade "$image" 'iohub-test back'; then
    pass "four boots, two installs, a commit and a rollback in $boot_secs s"
  else
    fail "no report after the rollback within $boot_limit s (log: $log)"
    tail -n 40 "$log"
  fi
  mark_pattern=""
  [ -z "$mark_ms" ] || pass "drop to committed (boot N, install, reboot, boot N+1, health gate): $((mark_ms / 1000)).$((mark_ms % 1000 / 100)) s under TCG"
  local ready
  ready=$(grep -ao 'iohub-ready version=[^ ]* slot=[^ ]*' "$log" | tr -d '\r' | tr '\n' ',' || true)
  [ "$ready" = "iohub-ready version=$version slot=A,iohub-ready version=$v1 slot=B,iohub-ready version=$v2 slot=A,iohub-ready version=$v1 slot=B," ] \
    && pass "ready lines: $ready" || fail "ready lines: $ready"
  grep -aq "iohub-firmware installed slot=B version=$v1" "$log" && pass "$v1 installed into slot B from the drop" \
    || fail "no install of $v1 into B"
  grep -aq "iohub-firmware committed slot=B" "$log" && grep -aq 'iohub-test committed: iohub_default=B' "$log" \
    && pass "trial of $v1 committed: $(grep -ao 'iohub-test committed:.*' "$log" | tr -d '\r')" || fail "no commit of B"
  grep -aq "iohub-firmware installed slot=A version=$v2" "$log" && pass "$v2 installed into slot A from the drop" \
    || fail "no install of $v2 into A"
  local rb
  rb=$(grep -ao 'iohub-firmware rolled-back.*' "$log" | head -n1 | tr -d '\r' || true)
  [[ "$rb" == *"slot=B"* && "$rb" == *"firewall"* && "$rb" == *"150 s"* ]] && pass "rolled back by itself: $rb" || fail "rollback line: '$rb'"
  local env
  env=$(grubenv_get "$image" | tr '\n' ' ' || true)
  [[ "$env" == *"iohub_default=B"* && "$env" == *"iohub_trial= "* ]] && pass "grubenv after: $env" \
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
# The boots run in IOHUB_DISTRO_LANES lanes at once (default 1: with two guests on the machine
# kind's 2 cores, a UEFI boot's global_mqtt was still applying after the 180 s settle bound).
# Each test, in the order given, goes to the lane with the least work so far, by its rough length
# in boots (upgrade builds two versions and boots four times).
lanes=${IOHUB_DISTRO_LANES:-1}
declare -A weight=([upgrade]=5 [bios]=2)
lane_work=()
lane_tests=()
for ((l = 0; l < lanes; l++)); do lane_work[l]=0; lane_tests[l]=""; done
for t in "${tests[@]}"; do
  best=0
  for ((l = 1; l < lanes; l++)); do ((lane_work[l] < lane_work[best])) && best=$l; done
  lane_work[best]=$((lane_work[best] + ${weight[$t]:-1}))
  lane_tests[best]+="$t "
done
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
    for t in ${lane_tests[l]}; do run_one "$t"; done
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
