#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (gitignored) with seed inputs from the test fixtures and the shared corpus:
#   inspect_elf     the objects themselves: tests/fixtures/*.bpf.o and ../shared/corpus/**/*.{o,elf}
#   decode_analyze  each executable section, behind the target's 3-byte header (byte order and section kind,
#                   helper selector; see fuzz_targets/decode_analyze.rs)
#   btf_parse       each .BTF section
#   cbor_metadata   `bpfgate inspect --format cbor` of each object (builds bpfgate-cli in the main workspace)
#   policy_yaml     the policy files: examples/policies/*.yaml, tests/policy/lint/*.yaml, tests/policy/compile/*.yaml
#   compiled_policy_cbor  `bpfgate policy compile` of each of those policy files that compiles
# Needs llvm-readelf and llvm-objcopy (clang 14's, plain or -14 suffixed). Safe to run again: it overwrites.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$fuzz_dir/.." && pwd)
shared=${BPFGATE_SHARED_CORPUS:-$root/../shared/corpus}
[ -d "$shared" ] && shared=$(cd "$shared" && pwd)
corpus=$fuzz_dir/corpus

tool() {
    for t in "$1" "$1-14"; do
        if command -v "$t" >/dev/null; then
            echo "$t"
            return
        fi
    done
    echo "seed.sh: $1 not found" >&2
    exit 1
}
readelf=$(tool llvm-readelf)
objcopy=$(tool llvm-objcopy)

mkdir -p "$corpus"/{inspect_elf,decode_analyze,btf_parse,cbor_metadata,policy_yaml,compiled_policy_cbor}

objects=()
for f in "$root"/tests/fixtures/*.bpf.o; do
    [ -e "$f" ] && objects+=("$f")
done
if [ -d "$shared" ]; then
    while IFS= read -r -d '' f; do
        objects+=("$f")
    done < <(find "$shared" -type f \( -name '*.o' -o -name '*.elf' \) -print0 | sort -z)
else
    echo "seed.sh: no shared corpus at $shared, using the fixtures only" >&2
fi

# The section-name index of decode_analyze's SECTIONS for a section name (0 = kprobe/x).
section_kind() {
    case "$1" in
        xdp*) echo 1 ;;
        tc* | classifier* | action*) echo 2 ;;
        socket*) echo 3 ;;
        fentry* | fexit* | tp_btf* | iter*) echo 4 ;;
        lsm*) echo 5 ;;
        tracepoint* | tp/*) echo 6 ;;
        fmod_ret*) echo 7 ;;
        cgroup/skb* | cgroup_skb*) echo 8 ;;
        sk_msg*) echo 9 ;;
        struct_ops*) echo 10 ;;
        raw_tp* | raw_tracepoint*) echo 11 ;;
        perf_event*) echo 12 ;;
        sk_skb*) echo 13 ;;
        cgroup/getsockopt* | cgroup/setsockopt*) echo 14 ;;
        *) echo 0 ;;
    esac
}

# A flat file name for an object: its path under the checkout or under the shared corpus.
corpus_key() {
    local rel=${1#"$root"/}
    rel=${rel#"$shared"/}
    printf '%s' "$rel" | tr '/' '_'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n_obj=0 n_code=0 n_btf=0
for f in "${objects[@]}"; do
    key=$(corpus_key "$f")
    cp "$f" "$corpus/inspect_elf/$key"
    n_obj=$((n_obj + 1))
    # EI_DATA: 1 little-endian, 2 big-endian.
    data=$(od -An -tu1 -j5 -N1 "$f" | tr -d ' ')
    big=0
    [ "$data" = 2 ] && big=1
    # `llvm-readelf -S -W`: "[Nr] Name Type Address Off Size ES Flg Lk Inf Al"; take executable PROGBITS and .BTF.
    "$readelf" -S -W "$f" 2>/dev/null |
        sed -n 's/^ *\[ *[0-9]*\] //p' |
        awk '($2 == "PROGBITS" && $7 ~ /X/) || $1 == ".BTF" { print $1 }' >"$tmp/sections" || true
    while IFS= read -r sec; do
        [ -n "$sec" ] || continue
        out=$tmp/dump
        rm -f "$out"
        "$objcopy" --dump-section "$sec=$out" "$f" "$tmp/discard" 2>/dev/null || continue
        [ -s "$out" ] || continue
        name=$key.$(printf '%s' "$sec" | tr -c 'A-Za-z0-9._-' '_')
        if [ "$sec" = .BTF ]; then
            cp "$out" "$corpus/btf_parse/$name"
            n_btf=$((n_btf + 1))
        else
            header=$(( ($(section_kind "$sec") << 1) | big ))
            { printf "\\$(printf '%03o' "$header")\\000\\000"; cat "$out"; } >"$corpus/decode_analyze/$name"
            n_code=$((n_code + 1))
        fi
    done <"$tmp/sections"
done

# CBOR reports: the CLI exits 2 when a report has errors, which some corpus objects do on purpose.
(cd "$root" && cargo build -q -p bpfgate-cli)
bpfgate=${CARGO_TARGET_DIR:-$root/target}/debug/bpfgate
n_cbor=0
for f in "${objects[@]}"; do
    key=$(corpus_key "$f")
    "$bpfgate" inspect --format cbor "$f" >"$corpus/cbor_metadata/$key.cbor" 2>/dev/null || true
    n_cbor=$((n_cbor + 1))
done

# Policies, and their compiled form where they compile (the lint and compile test files mostly do not, on purpose).
n_policy=0 n_compiled=0
for f in "$root"/examples/policies/*.yaml "$root"/tests/policy/lint/*.yaml "$root"/tests/policy/compile/*.yaml; do
    [ -e "$f" ] || continue
    key=$(corpus_key "$f")
    cp "$f" "$corpus/policy_yaml/$key"
    n_policy=$((n_policy + 1))
    if "$bpfgate" policy compile "$f" -o "$tmp/compiled" >/dev/null 2>&1; then
        cp "$tmp/compiled" "$corpus/compiled_policy_cbor/${key%.yaml}.cbor"
        n_compiled=$((n_compiled + 1))
    fi
done

echo "seed.sh: $n_obj objects, $n_code code sections, $n_btf .BTF sections, $n_cbor CBOR reports," \
    "$n_policy policies, $n_compiled compiled policies in $corpus"
