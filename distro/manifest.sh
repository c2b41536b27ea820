#!/usr/bin/env bash
# manifest.sh BUNDLE_DIR VERSION DPKG_LIST KEY.pem development|release KEY=VALUE...
# Writes BUNDLE_DIR/manifest.json (SHA-256 and size of every file of the bundle, the version, the
# build metadata, the signing key's id and kind, the installed packages) and BUNDLE_DIR/manifest.sig
# (raw 64-byte ed25519 signature over the exact bytes of manifest.json). Format: distro/README.md.
set -euo pipefail
dir=$1 version=$2 dpkg_list=$3 key=$4 kind=$5
shift 5
repo=$(cd "$(dirname "$0")/.." && pwd)

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

key_id=$(openssl pkey -in "$key" -pubout -outform DER | sha256sum | cut -c1-16)
commit=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=true

{
  printf '{\n  "format": 1,\n  "version": %s,\n' "$(json_str "$version")"
  printf '  "key": {"id": "%s", "development": %s},\n' "$key_id" "$([ "$kind" = development ] && echo true || echo false)"
  printf '  "files": {\n'
  first=1
  while read -r f; do
    [ "$first" = 1 ] || printf ',\n'
    first=0
    printf '    %s: {"sha256": "%s", "size": %s}' "$(json_str "$f")" \
      "$(sha256sum "$dir/$f" | cut -d' ' -f1)" "$(stat -c %s "$dir/$f")"
  done < <(cd "$dir" && find . -type f ! -name manifest.json ! -name manifest.sig -printf '%P\n' | LC_ALL=C sort)
  printf '\n  },\n  "build": {\n'
  printf '    "date": "%s",\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '    "git_commit": "%s",\n    "git_dirty": %s,\n    "arch": "amd64"' "$commit" "$dirty"
  for kv in "$@"; do
    printf ',\n    %s: %s' "$(json_str "${kv%%=*}")" "$(json_str "${kv#*=}")"
  done
  printf '\n  },\n  "packages": [\n'
  first=1
  while IFS=$'\t' read -r name ver arch; do
    [ "$first" = 1 ] || printf ',\n'
    first=0
    printf '    [%s, %s, %s]' "$(json_str "$name")" "$(json_str "$ver")" "$(json_str "$arch")"
  done <"$dpkg_list"
  printf '\n  ]\n}\n'
} >"$dir/manifest.json"

openssl pkeyutl -sign -inkey "$key" -rawin -in "$dir/manifest.json" -out "$dir/manifest.sig"
echo "manifest: $(wc -c <"$dir/manifest.json") bytes, key $key_id ($kind)"
