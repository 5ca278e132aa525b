#!/usr/bin/env bash
# Fails if a linux-gnu binary of this package needs a glibc newer than the baseline the published binaries
# promise (README "Install"): the highest GLIBC_x.y symbol version it imports must be <= 2.17.
# Usage: scripts/check-glibc.sh [file.node ...] (default: the superpacket.linux-*-gnu.node files in the root)
set -euo pipefail
cd "$(dirname "$0")/.."
readonly BASELINE=2.17
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(superpacket.linux-*-gnu.node)
status=0
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "check-glibc: $f not found (build it with npm run build:native)" >&2; exit 1; }
  # readelf reads any architecture's ELF (the aarch64 binary is checked on an x64 host too).
  highest=$(readelf -W --dyn-syms "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  [ -n "$highest" ] || { echo "check-glibc: $f imports no GLIBC symbol versions" >&2; exit 1; }
  if [ "$(printf '%s\n%s\n' "$highest" "$BASELINE" | sort -V | tail -n 1)" != "$BASELINE" ]; then
    echo "check-glibc: $f needs GLIBC_$highest, above the $BASELINE baseline; these symbols:" >&2
    readelf -W --dyn-syms "$f" | grep -F "@GLIBC_$highest " >&2 || true
    status=1
  else
    echo "check-glibc: $f needs at most GLIBC_$highest (baseline $BASELINE)"
  fi
done
exit $status
