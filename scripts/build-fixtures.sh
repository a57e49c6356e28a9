#!/usr/bin/env bash
# Builds every tests/fixtures/*.bpf.c into the committed tests/fixtures/*.bpf.o, reproducibly: the same
# clang and libbpf headers give the same bytes wherever the checkout lives.
#
#   scripts/build-fixtures.sh           rebuild; only objects whose bytes changed are rewritten
#   scripts/build-fixtures.sh --check   rebuild into a temp dir; fail, naming each file, if a committed
#                                       object differs from the fresh build, is missing, or has no source
#
# Needs Debian bookworm's clang 14 (CLANG=/path/to/clang-14 to pick one) and libbpf-dev for <bpf/*.h>.
# Another clang major emits different code, so the script refuses it rather than report false differences.
set -euo pipefail

die() { echo "build-fixtures: $*" >&2; exit 2; }

mode=build
case "${1-}" in
"") ;;
--check) mode=check ;;
-h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
*) die "unknown argument '$1' (usage: $0 [--check])" ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$root/tests/fixtures

clang=${CLANG:-$(command -v clang-14 || command -v clang || true)}
[ -n "$clang" ] || die "clang not found (apt-get install clang-14)"
version=$("$clang" -dumpversion 2>/dev/null) || die "$clang does not run"
[ "${version%%.*}" = 14 ] || die "$clang is clang $version; the committed objects are clang 14 output"
[ -f /usr/include/bpf/bpf_helpers.h ] || die "<bpf/bpf_helpers.h> missing (apt-get install libbpf-dev)"
# linux/bpf.h pulls in asm/types.h, which -target bpf does not look for under the multiarch directory.
asm_inc=/usr/include/x86_64-linux-gnu
[ -f "$asm_inc/asm/types.h" ] || die "$asm_inc/asm/types.h missing (apt-get install linux-libc-dev)"

# Relative source names plus the prefix maps keep the checkout's absolute path out of DWARF and BTF line info.
cflags=(-O2 -g -target bpf -D__TARGET_ARCH_x86 -I"$asm_inc" -Wall
	-fdebug-compilation-dir=. -ffile-prefix-map="$dir"=.)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cd "$dir"
shopt -s nullglob
sources=(*.bpf.c)
[ ${#sources[@]} -gt 0 ] || die "no *.bpf.c in $dir"

for c in "${sources[@]}"; do
	"$clang" "${cflags[@]}" -c "$c" -o "$out/${c%.c}.o" || die "$c failed to compile"
done

status=0
for c in "${sources[@]}"; do
	o=${c%.c}.o
	if cmp -s "$out/$o" "$o"; then
		continue
	fi
	if [ "$mode" = check ]; then
		if [ -f "$o" ]; then
			echo "tests/fixtures/$o differs from a fresh build of $c" >&2
		else
			echo "tests/fixtures/$o is missing (source $c)" >&2
		fi
		status=1
	else
		cp "$out/$o" "$o"
		echo "updated tests/fixtures/$o"
	fi
done

# An object whose source is gone would be tested against code nobody can rebuild.
for o in *.bpf.o; do
	if [ ! -f "${o%.o}.c" ]; then
		echo "tests/fixtures/$o has no source ${o%.o}.c" >&2
		status=1
	fi
done

if [ "$mode" = check ] && [ $status -ne 0 ]; then
	echo "build-fixtures: run scripts/build-fixtures.sh (clang $version) and commit the objects" >&2
fi
exit $status
