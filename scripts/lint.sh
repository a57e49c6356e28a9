#!/usr/bin/env bash
# The project's habits, checked (scripts/test.sh runs this first; CI with it):
#   formatting of the Rust (rustfmt.toml) and of the BPF C (.clang-format, clang-format 19),
#   clippy with the workspace lints (Cargo.toml [workspace.lints]) and -D warnings,
#   rustdoc without warnings, and the dependency rule: the library `bpfgate` never links libbpf.
# `scripts/lint.sh --fix` applies the formatters instead of checking.
set -euo pipefail
cd "$(dirname "$0")/.."

fix=0
[ "${1-}" = --fix ] && fix=1

clang_format=${CLANG_FORMAT:-clang-format-19}
# vmlinux.h is bpftool output, not ours to format.
mapfile -t c_files < <(git ls-files 'gate-bpf/src/bpf/*.c' 'gate-bpf/src/bpf/*.h' 'tests/fixtures/*.c' 'tests/fixtures/*.h' |
	grep -v '/vmlinux\.h$')

if [ "$fix" = 1 ]; then
	cargo fmt --all
	cargo fmt --manifest-path fuzz/Cargo.toml
	"$clang_format" -i "${c_files[@]}"
	exit 0
fi

step() { echo "lint: $*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
step "clang-format (${#c_files[@]} files)"
"$clang_format" --dry-run -Werror "${c_files[@]}"
step "clippy -D warnings"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
step "rustdoc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
step "dependency rule: bpfgate links no libbpf"
# The pure core stays pure: nothing under `bpfgate` (normal and build dependencies) may be libbpf.
if cargo tree -p bpfgate --locked -e normal,build --prefix none --format '{p}' | grep -E '^libbpf'; then
	echo "lint: the library bpfgate depends on libbpf (see above); only bpfgate-gate may" >&2
	exit 1
fi
step "ok"
