#!/usr/bin/env bash
# The project's test command (README "Tests"; CI's .ci/run runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Formatting, clippy, rustdoc and the dependency rule (scripts/lint.sh).
scripts/lint.sh
# The committed fixture objects are exactly what their sources compile to.
scripts/build-fixtures.sh --check
cargo test --workspace --locked
# Live-kernel tests in qemu VMs on BPF-LSM kernels (6.12 and the newest sid kernel).
cargo xtask vmtest --kernel all --timeout 1500
