#!/bin/sh
# Installs the Debian packages bpfgate needs to build and test, and nothing else.
# Idempotent: packages already installed are left alone, and when all are present
# apt is not run at all. Needs root (or sudo) only when something is missing.
set -eu

PACKAGES="
clang
clang-format-19
llvm
libelf-dev
libbpf-dev
zlib1g-dev
make
pkg-config
qemu-system-x86
cpio
busybox-static
xz-utils
zstd
bpftrace
bpftool
libbpf-tools
iproute2
debian-archive-keyring
lintian
systemd
binutils
"
# clang, llvm: compile the BPF C programs (libbpf-cargo) and inspect objects.
# clang-format-19: scripts/lint.sh checks the BPF C's formatting (19 formats BPF map macros better than 14).
# libbpf-dev: <bpf/bpf_helpers.h> and friends for the test fixtures (scripts/build-fixtures.sh).
# libelf-dev, zlib1g-dev, make, pkg-config: libbpf-sys builds libbpf from source.
# qemu-system-x86, busybox-static, cpio: the VM live-test harness (cargo xtask vmtest).
# xz-utils, zstd: vmtest decompresses the kernel modules the guests load (nf_conntrack, nf_nat).
# bpftrace, bpftool, libbpf-tools, iproute2: live tests and their guests use them as real BPF clients
#   (vmtest puts these packages' programs into the guest: tests/live/clients.rs).
# debian-archive-keyring: vmtest verifies the Debian kernel packages it downloads.
# lintian: `cargo xtask deb --check` lints the Debian package with it.
# systemd: `cargo xtask deb --check` runs `systemd-analyze verify` on bpfgate.service (nothing is started).
# binutils: `cargo xtask deb` strips the release binary (strip).

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
    "install ok installed") ;;
    *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
echo "install-deps: installing:$missing"
$SUDO apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
