//! Shared pieces of the two policy targets (`policy_yaml`, `compiled_policy_cbor`): fixed programs and subjects,
//! a collision-free resolver, and the checks on a compiled policy.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use bpfgate::metadata::{MapAccess, MapDef};
use bpfgate::policy::compiled::{
    self, CompiledPolicy, CompiledVerdict, ExeKey, Header, KernelProgram, KernelSubject, KernelTables, PatternRecord,
    Resolver, RuleRecord, MAP_RECORD_SIZE, TARGET_PATTERN_LEN,
};
use bpfgate::policy::{reason_bits, Action, Decision, Policy, Subject};
use bpfgate::{Capability, ProgramMetadata};

/// Name bytes of a map-name pattern record (`MAP_RECORD_SIZE` less the 4-byte kind/len/reserved prefix).
pub const MAP_PATTERN_LEN: usize = MAP_RECORD_SIZE - 4;

/// A program with its object's map definitions, and the gate's view of it.
pub struct Program {
    pub name: String,
    pub meta: ProgramMetadata,
    pub maps: Vec<MapDef>,
    pub kernel: KernelProgram,
}

/// `tests/policy/eval/programs.json` (embedded at build time), plus a few variants that reach what those do not:
/// an attach target longer than the gate's 64-byte pattern slot, a map write the analysis could not attribute,
/// every capability class at once, and a written map whose name has a multi-byte character across the kernel's
/// 15-byte cut.
pub fn programs() -> &'static [Program] {
    static PROGRAMS: OnceLock<Vec<Program>> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/policy/eval/programs.json")).expect("programs.json");
        let mut out: Vec<(String, ProgramMetadata, Vec<MapDef>)> = Vec::new();
        for (name, v) in json.as_object().expect("programs.json is an object") {
            let meta: ProgramMetadata = serde_json::from_value(v["program"].clone()).expect("a program");
            let maps: Vec<MapDef> = serde_json::from_value(v["maps"].clone()).expect("its maps");
            out.push((name.clone(), meta, maps));
        }
        let base = out.iter().find(|(n, ..)| n == "kprobe_openat").expect("kprobe_openat").clone();

        let mut long = base.1.clone();
        long.attach_target = Some(format!("do_sys_{}", "x".repeat(80)));
        out.push(("long_target".into(), long, Vec::new()));

        let mut unattributed = base.1.clone();
        unattributed.maps.clear();
        out.push(("unattributed_map_write".into(), unattributed, Vec::new()));

        let mut every = base.1.clone();
        every.capabilities = Capability::ALL.to_vec();
        every.evidence = Capability::ALL.iter().map(|c| (*c, vec![1])).collect();
        out.push(("every_class".into(), every, Vec::new()));

        let mut multibyte = base.1.clone();
        multibyte.maps = vec![MapAccess { name: "cilium_ct\u{e9}\u{e9}\u{e9}\u{e9}".into(), read: true, write: true }];
        out.push(("multibyte_map".into(), multibyte, Vec::new()));

        out.into_iter()
            .map(|(name, meta, maps)| {
                let kernel = KernelProgram::from_metadata(&meta, &maps);
                Program { name, meta, maps, kernel }
            })
            .collect()
    })
}

/// Subjects that do not depend on the policy: nothing known, and a few typical ones.
pub fn fixed_subjects() -> Vec<Subject> {
    let s = |exe: Option<&str>, cgroup: Option<&str>, uid: Option<u32>| Subject {
        exe: exe.map(Into::into),
        cgroup: cgroup.map(Into::into),
        uid,
    };
    vec![
        s(None, None, None),
        s(Some("/usr/bin/a"), Some("/a/b"), Some(0)),
        s(None, Some("/"), Some(1000)),
        s(Some("/usr/bin//a"), Some("/a/b/"), Some(0)),
    ]
}

/// Adds, for each (exe, cgroup, uid) triple, the subject made of exactly those, the same one in
/// a child cgroup, and the same one with the uid unknown: the subjects most likely to reach a rule.
pub fn subjects_for(out: &mut Vec<Subject>, keys: impl Iterator<Item = (Option<String>, Option<String>, Option<u32>)>) {
    for (exe, cgroup, uid) in keys {
        let exact = Subject { exe, cgroup, uid };
        let mut child = exact.clone();
        child.cgroup = Some(format!("{}/child", exact.cgroup.as_deref().unwrap_or("")));
        let mut no_uid = exact.clone();
        no_uid.uid = None;
        out.extend([exact, child, no_uid]);
    }
}

/// Gives every path a distinct identity, in the order it is asked (no hash collisions for the fuzzer to find).
#[derive(Default)]
pub struct Host {
    exes: RefCell<BTreeMap<String, u64>>,
    cgroups: RefCell<BTreeMap<String, u64>>,
}

fn id_of(table: &RefCell<BTreeMap<String, u64>>, path: &str) -> u64 {
    let mut t = table.borrow_mut();
    let next = t.len() as u64 + 1;
    *t.entry(path.to_owned()).or_insert(next)
}

impl Resolver for Host {
    fn exe(&self, path: &str) -> Option<ExeKey> {
        Some(ExeKey { dev: 0x800001, ino: id_of(&self.exes, path) })
    }
    fn cgroup(&self, path: &str) -> Option<u64> {
        Some(id_of(&self.cgroups, path))
    }
}

/// What any verdict of the gate must satisfy, whatever the tables say: a rule id inside the rule table, audit
/// mode never denies, and the default decides with the default's action.
pub fn check_verdict(t: &KernelTables, v: &CompiledVerdict) {
    let audit_mode = t.header.mode == 1;
    if audit_mode {
        assert_ne!(v.decision, Decision::Deny, "audit mode denied: {v:?}");
    }
    match v.rule {
        Some(id) => assert!((id as usize) < usize::from(t.header.rule_count).min(64), "rule {id} out of range: {v:?}"),
        None => {
            let expect = match Action::from_number(t.header.default_action) {
                Some(Action::Allow) => (Decision::Allow, 0),
                Some(Action::Audit) => (Decision::Audit, reason_bits::NO_RULE),
                _ => (if audit_mode { Decision::Audit } else { Decision::Deny }, reason_bits::NO_RULE),
            };
            assert_eq!((v.decision, v.reasons), expect, "the default decided otherwise: {v:?}");
        }
    }
}

/// Evaluates every fixed program for every subject against `c` (resolved with [`Host`]); checks each verdict with
/// [`check_verdict`] and hands it to `each` with the subject and program.
pub fn evaluate_all(
    c: &CompiledPolicy,
    subjects: &[Subject],
    mut each: impl FnMut(&Subject, &Program, CompiledVerdict),
) {
    let host = Host::default();
    let resolved = c.resolve(&host);
    assert!(resolved.unresolved.is_empty(), "the host resolves every path: {:?}", resolved.unresolved);
    for s in subjects {
        let ks = KernelSubject::resolve(s, &host);
        for p in programs() {
            let v = compiled::evaluate(&resolved.tables, &ks, &p.kernel);
            check_verdict(&resolved.tables, &v);
            each(s, p, v);
        }
    }
}

/// The differential property of the unit proptest, on any policy: for every subject and fixed program, the
/// compiled evaluation gives the source evaluation's decision, rule (index and name) and reason kinds. `each` sees
/// every verdict.
pub fn differential(policy: &Policy, c: &CompiledPolicy, subjects: &[Subject], mut each: impl FnMut(&CompiledVerdict)) {
    evaluate_all(c, subjects, |s, p, k| {
        each(&k);
        let v = policy.evaluate(s, &p.meta, &p.maps);
        let ctx = || format!("subject {s:?}, program {}: source {v:?}, compiled {k:?}", p.name);
        assert_eq!(k.decision, v.decision, "decision differs; {}", ctx());
        assert_eq!(k.rule, v.rule.as_ref().map(|r| r.index as u32), "matched rule differs; {}", ctx());
        assert_eq!(k.reasons, v.reason_mask(), "reasons differ; {}", ctx());
        if let (Some(i), Some(m)) = (k.rule, &v.rule) {
            assert_eq!(c.rule_names[i as usize], m.name, "rule name differs; {}", ctx());
        }
    });
}

/// A compiled policy (already validated) survives CBOR and its fixed-size records survive their encodings.
pub fn check_round_trips(c: &CompiledPolicy) {
    let cbor = c.to_cbor();
    let back = CompiledPolicy::from_cbor("round-trip", &cbor).expect("a valid compiled policy re-decodes");
    assert_eq!(&back, c, "CBOR round trip changed the compiled policy");
    assert_eq!(back.to_cbor(), cbor, "CBOR encoding is not stable");
    assert_eq!(Header::from_le_bytes(&c.header.to_le_bytes()).as_ref(), Ok(&c.header), "header record");
    for r in &c.rules {
        assert_eq!(RuleRecord::from_le_bytes(&r.to_le_bytes()).as_ref(), Ok(r), "rule record");
    }
    for t in &c.targets {
        let b = t.to_le_bytes::<TARGET_PATTERN_LEN>();
        assert_eq!(PatternRecord::from_le_bytes::<TARGET_PATTERN_LEN>(&b).as_ref(), Ok(t), "target record");
    }
    for m in &c.map_names {
        let b = m.to_le_bytes::<MAP_PATTERN_LEN>();
        assert_eq!(PatternRecord::from_le_bytes::<MAP_PATTERN_LEN>(&b).as_ref(), Ok(m), "map name record");
    }
}

/// With `BPFGATE_FUZZ_STATS=1`, how many inputs (or verdicts) reached each stage of a target, printed at every
/// power of two inputs: a check that the properties are exercised, not skipped. Stage 0 counts the inputs.
pub struct Stats {
    pub target: &'static str,
    pub stages: &'static [&'static str],
    pub counts: [AtomicUsize; 8],
}

impl Stats {
    pub const fn new(target: &'static str, stages: &'static [&'static str]) -> Stats {
        assert!(stages.len() <= 8);
        Stats { target, stages, counts: [const { AtomicUsize::new(0) }; 8] }
    }

    pub fn hit(&self, stage: usize) {
        static ON: OnceLock<bool> = OnceLock::new();
        if !*ON.get_or_init(|| std::env::var_os("BPFGATE_FUZZ_STATS").is_some()) {
            return;
        }
        let n = self.counts[stage].fetch_add(1, Ordering::Relaxed) + 1;
        if stage == 0 && n.is_power_of_two() {
            let counts: Vec<String> = self
                .stages
                .iter()
                .zip(&self.counts)
                .map(|(s, c)| format!("{s} {}", c.load(Ordering::Relaxed)))
                .collect();
            eprintln!("{} stats: {}", self.target, counts.join(", "));
        }
    }
}
