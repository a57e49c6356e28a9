//! Every fuzz target's properties on its seeds and committed regressions, in plain `cargo test` (no sanitizer,
//! no libFuzzer: the properties are plain Rust). A change that breaks a property on a known input fails CI here,
//! not only in the next fuzzing session.
//!
//! The seeds are what `seed.sh` gives a fuzzing run, made from committed files: the fixture objects, the
//! real-world corpus (`corpus/`), and the shared corpus beside the checkout when it is there; their executable
//! sections (with `decode_analyze`'s header) and `.BTF` sections; their reports as CBOR; the policy files and
//! their compiled form. Then `regressions/<target>/*`: inputs that once broke a property.

use std::path::{Path, PathBuf};

use bpfgate::metadata::to_cbor;
use bpfgate::policy::{compiled, Policy};
use bpfgate_fuzz::targets;
use bpfgate_test_support::files::under as files;
use object::{Object as _, ObjectSection as _, SectionFlags};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The objects the seeds come from.
fn objects() -> Vec<PathBuf> {
    let root = root();
    let mut out = files(&root.join("tests/fixtures"), &[".bpf.o"]);
    out.extend(files(&root.join("corpus/deb"), &[".o"]));
    out.extend(files(&root.join("corpus/embedded"), &[".o"]));
    out.extend(files(&root.join("corpus/src"), &[".o"]));
    let shared = std::env::var_os("BPFGATE_CORPUS").map_or_else(|| root.join("../shared/corpus"), PathBuf::from);
    out.extend(files(&shared, &[".o", ".elf"]));
    out
}

/// `decode_analyze`'s byte 0 for a section: bit 0 big-endian, bits 1.. an index into its `SECTIONS` (the
/// context kinds), as `seed.sh` picks it.
fn section_kind(name: &str) -> u8 {
    let starts = |p: &[&str]| p.iter().any(|x| name.starts_with(x));
    match () {
        () if starts(&["xdp"]) => 1,
        () if starts(&["tc", "classifier", "action"]) => 2,
        () if starts(&["socket"]) => 3,
        () if starts(&["fentry", "fexit", "tp_btf", "iter"]) => 4,
        () if starts(&["lsm"]) => 5,
        () if starts(&["tracepoint", "tp/"]) => 6,
        () if starts(&["fmod_ret"]) => 7,
        () if starts(&["cgroup/skb", "cgroup_skb"]) => 8,
        () if starts(&["sk_msg"]) => 9,
        () if starts(&["struct_ops"]) => 10,
        () if starts(&["raw_tp", "raw_tracepoint"]) => 11,
        () if starts(&["perf_event"]) => 12,
        () if starts(&["sk_skb"]) => 13,
        () if starts(&["cgroup/getsockopt", "cgroup/setsockopt"]) => 14,
        () => 0,
    }
}

/// Runs `check` on each input, naming the one that fails.
fn replay(target: &str, inputs: impl IntoIterator<Item = (String, Vec<u8>)>, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for (name, data) in inputs {
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: the properties fail on seed {name}");
        n += 1;
    }
    eprintln!("{target}: {n} inputs replayed");
    n
}

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    files(&root().join("fuzz/regressions").join(target), &[])
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("reading a regression")))
        .collect()
}

fn read_all(paths: &[PathBuf]) -> Vec<(String, Vec<u8>)> {
    paths.iter().map(|p| (p.display().to_string(), std::fs::read(p).expect("reading a seed file"))).collect()
}

/// Executable sections (as `decode_analyze` inputs) and `.BTF` sections of every object.
fn sections() -> (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>) {
    let (mut code, mut btf) = (Vec::new(), Vec::new());
    for path in objects() {
        let bytes = std::fs::read(&path).expect("reading an object");
        let Ok(file) = object::File::parse(&*bytes) else { continue };
        let big = u8::from(!file.is_little_endian());
        for s in file.sections() {
            let (Ok(name), Ok(data)) = (s.name(), s.data()) else { continue };
            let exec = matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
            let label = format!("{}:{name}", path.display());
            if name == ".BTF" {
                btf.push((label, data.to_vec()));
            } else if exec && !data.is_empty() {
                let mut input = vec![(section_kind(name) << 1) | big, 0, 0];
                input.extend_from_slice(data);
                code.push((label, input));
            }
        }
    }
    (code, btf)
}

#[test]
fn inspect_elf_replays() {
    let objects = objects();
    assert!(objects.len() > 40, "the fixtures and the corpus give the seeds ({} objects)", objects.len());
    replay(
        "inspect_elf",
        read_all(&objects).into_iter().chain(regressions("inspect_elf")),
        targets::inspect_elf::check,
    );
}

#[test]
fn decode_analyze_replays() {
    let (code, _) = sections();
    replay("decode_analyze", code.into_iter().chain(regressions("decode_analyze")), targets::decode_analyze::check);
}

#[test]
fn btf_parse_replays() {
    let (_, btf) = sections();
    replay("btf_parse", btf.into_iter().chain(regressions("btf_parse")), targets::btf_parse::check);
}

#[test]
fn cbor_metadata_replays() {
    let reports = objects().into_iter().map(|p| {
        let report = bpfgate::inspect(&p.display().to_string(), &std::fs::read(&p).expect("reading an object"));
        (p.display().to_string(), to_cbor(&report).expect("a report encodes"))
    });
    replay("cbor_metadata", reports.chain(regressions("cbor_metadata")), targets::cbor_metadata::check);
}

fn policy_files() -> Vec<PathBuf> {
    let root = root();
    let mut out = files(&root.join("examples/policies"), &[".yaml"]);
    for dir in ["lint", "compile"] {
        out.extend(files(&root.join("tests/policy").join(dir), &[".yaml"]));
    }
    out
}

#[test]
fn policy_yaml_replays() {
    let policies = policy_files();
    assert!(policies.len() > 10, "the policy files give the seeds");
    replay(
        "policy_yaml",
        read_all(&policies).into_iter().chain(regressions("policy_yaml")),
        targets::policy_yaml::check,
    );
}

#[test]
fn compiled_policy_cbor_replays() {
    let compiled = policy_files().into_iter().filter_map(|p| {
        let text = std::fs::read_to_string(&p).ok()?;
        let policy = Policy::parse(&p.display().to_string(), &text).ok()?;
        Some((p.display().to_string(), compiled::compile(&policy, 1).ok()?.to_cbor()))
    });
    let n = replay(
        "compiled_policy_cbor",
        compiled.chain(regressions("compiled_policy_cbor")),
        targets::compiled_policy_cbor::check,
    );
    assert!(n >= 3, "the example policies compile");
}
