#!/usr/bin/env bash
# The project's test command (README "Tests"; CI's .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."

# A cold run writes ~5 GiB (target/: debug, release, fuzz, the VM kernels); short of room, it fails far from
# here (a linker or apt "No space left on device"), so say it first.
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((6 * 1024 * 1024)) ]; then
	echo "test.sh: warning: $((${free_kib:-0} / 1024)) MiB free on $(df -P . | awk 'NR == 2 { print $6 }'); a cold run needs ~5 GiB" >&2
fi
scripts/install-deps.sh
# Formatting, clippy, rustdoc and the dependency rule (scripts/lint.sh).
scripts/lint.sh
# The committed fixture objects are exactly what their sources compile to.
scripts/build-fixtures.sh --check
cargo test --workspace --locked
# Every fuzz target's properties on its seeds and regressions (fuzz/tests/replay.rs; no libFuzzer needed).
cargo test --manifest-path fuzz/Cargo.toml --no-default-features --locked
# The Debian package, built as released (a fat-LTO release build: 2-8 min on the 2-core machine, the most
# expensive step before the VMs), then `systemd-analyze verify` on its unit and lintian on the package.
cargo xtask deb --check
# Live-kernel tests in qemu VMs on BPF-LSM kernels (bookworm's 6.1, 6.12 and the newest sid kernel), two at a time.
cargo xtask vmtest --kernel all --parallel 2 --timeout 2400
