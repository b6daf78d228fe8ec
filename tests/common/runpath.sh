#!/usr/bin/env bash
# runpath.sh BIN_DIR: every ELF file built into BIN_DIR has a RUNPATH/RPATH made only of absolute
# directories: no empty element (the loader reads "" as the current directory) and no relative one,
# so a library planted in the directory a binary is started from is never loaded.
set -uo pipefail
bin=${1:?bin dir}
n=0 bad=0
for f in "$bin"/*; do
  [ -f "$f" ] && head -c4 "$f" | grep -q ELF || continue
  n=$((n + 1))
  p=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p')
  [ -z "$p" ] && continue
  case ":$p:" in
    *::*) echo "$f: RUNPATH [$p] has an empty element (the current directory)"; bad=1 ;;
  esac
  for e in $(printf '%s' "$p" | tr ':' ' '); do
    case "$e" in
      /*) ;;
      *) echo "$f: RUNPATH [$p] has the relative element '$e'"; bad=1 ;;
    esac
  done
done
[ "$n" -gt 3 ] || { echo "only $n ELF files in $bin"; exit 1; }
[ "$bad" = 0 ] || exit 1
echo "$n binaries: RUNPATH elements all absolute"
