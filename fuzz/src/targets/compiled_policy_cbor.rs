//! `compiled_policy_cbor`: arbitrary bytes as a compiled policy (`CompiledPolicy::from_cbor`, which decodes and
//! validates), and as the gate's fixed-size little-endian records (`Header`, `RuleRecord`, `PatternRecord`).
//!
//! Properties:
//! * `from_cbor` never panics (nor overflows the stack) on any input;
//! * what decodes passes `validate`, re-encodes to CBOR that decodes to an equal value (and encodes to the same
//!   bytes again), and its records survive their fixed-size encodings;
//! * `resolve` and `compiled::evaluate` on a decoded policy never panic, for the fixed programs of
//!   `crate::policy::programs` and fixed subjects plus subjects built from the policy's own exe, cgroup
//!   and uid keys; every verdict names a rule inside the table, audit mode never denies, and when no rule
//!   matches the header's default action decides;
//! * the record decoders never panic on any length; on the right length they decode every input, and
//!   re-encoding gives the input back except for the reserved bytes (zero), and a pattern's name bytes past its
//!   length (zero);
//! * the gate's algorithm is total on unvalidated tables too: the input read as a header, then rule records
//!   (at most 64), then attach-target records, is evaluated without a panic and with the verdict checks above.
//!   The kernel gate reads whatever is in its maps, so it must not rely on `validate`.

use std::collections::BTreeMap;

use crate::policy::{
    check_round_trips, check_verdict, evaluate_all, fixed_subjects, programs, subjects_for, Stats, MAP_PATTERN_LEN,
};
use bpfgate::policy::compiled::{
    self, CompiledPolicy, Header, KernelSubject, KernelTables, PatternRecord, RuleRecord, HEADER_SIZE,
    RULE_RECORD_SIZE, TARGET_PATTERN_LEN, TARGET_RECORD_SIZE,
};
use bpfgate::policy::Subject;

/// Keys of the policy that become test subjects (three subjects each).
const SUBJECT_KEYS: usize = 6;

static STATS: Stats = Stats::new(
    "compiled_policy_cbor",
    &["inputs", "raw tables evaluated", "decoded", "verdicts by a rule", "by the default"],
);

fn records(data: &[u8]) {
    // Any length: an error unless exact, never a panic.
    let _ = Header::from_le_bytes(data);
    let _ = RuleRecord::from_le_bytes(data);
    let _ = PatternRecord::from_le_bytes::<TARGET_PATTERN_LEN>(data);
    let _ = PatternRecord::from_le_bytes::<MAP_PATTERN_LEN>(data);

    if let Some(b) = data.get(..HEADER_SIZE) {
        let h = Header::from_le_bytes(b).expect("a header of the right size decodes");
        let mut expect = b.to_vec();
        expect[20..24].fill(0);
        assert_eq!(h.to_le_bytes().as_slice(), expect.as_slice(), "header re-encoding");
    }
    if let Some(b) = data.get(..RULE_RECORD_SIZE) {
        let r = RuleRecord::from_le_bytes(b).expect("a rule of the right size decodes");
        let mut expect = b.to_vec();
        expect[3] = 0;
        assert_eq!(r.to_le_bytes().as_slice(), expect.as_slice(), "rule re-encoding");
    }
    pattern::<TARGET_PATTERN_LEN>(data);
    pattern::<MAP_PATTERN_LEN>(data);
}

fn pattern<const N: usize>(data: &[u8]) {
    let Some(b) = data.get(..4 + N) else { return };
    let Ok(p) = PatternRecord::from_le_bytes::<N>(b) else {
        // Only a name that is not UTF-8 is refused.
        let len = usize::from(b[1]).min(N);
        assert!(std::str::from_utf8(&b[4..4 + len]).is_err(), "a UTF-8 pattern record was refused");
        return;
    };
    let len = usize::from(b[1]).min(N);
    let mut expect = vec![b[0], len as u8, 0, 0];
    expect.extend_from_slice(&b[4..4 + len]);
    expect.resize(4 + N, 0);
    assert_eq!(p.to_le_bytes::<N>(), expect, "pattern re-encoding");
    assert_eq!(PatternRecord::from_le_bytes::<N>(&p.to_le_bytes::<N>()).as_ref(), Ok(&p), "pattern round trip");
}

/// The input as raw kernel tables, unvalidated: header, up to 64 rules, then attach-target patterns; a few
/// subjects whose keys are in the tables.
fn raw_tables(data: &[u8]) {
    let Some(h) = data.get(..HEADER_SIZE) else { return };
    let header = Header::from_le_bytes(h).expect("header");
    let mut rest = &data[HEADER_SIZE..];
    let n_rules = usize::from(header.rule_count).min(64).min(rest.len() / RULE_RECORD_SIZE);
    let rules: Vec<RuleRecord> = rest[..n_rules * RULE_RECORD_SIZE]
        .chunks_exact(RULE_RECORD_SIZE)
        .map(|b| RuleRecord::from_le_bytes(b).expect("rule"))
        .collect();
    rest = &rest[n_rules * RULE_RECORD_SIZE..];
    let targets: Vec<PatternRecord> = rest
        .chunks_exact(TARGET_RECORD_SIZE)
        .filter_map(|b| PatternRecord::from_le_bytes::<TARGET_PATTERN_LEN>(b).ok())
        .collect();
    let t = KernelTables {
        header,
        rules,
        exe: BTreeMap::from([(compiled::ExeKey { dev: 1, ino: 1 }, header.exe_any.rotate_left(1))]),
        cgroup: BTreeMap::from([(1, header.cgroup_any.rotate_left(1))]),
        uid: BTreeMap::from([(0, header.uid_any.rotate_left(1))]),
        map_names: targets.iter().filter(|p| p.text.len() <= MAP_PATTERN_LEN).cloned().collect(),
        targets,
        helper_classes: Vec::new(),
    };
    let subjects = [
        KernelSubject::default(),
        KernelSubject { exe: Some(compiled::ExeKey { dev: 1, ino: 1 }), cgroup_ancestors: vec![2, 1], uid: Some(0) },
    ];
    STATS.hit(1);
    for s in &subjects {
        for p in programs() {
            let v = compiled::evaluate(&t, s, &p.kernel);
            check_verdict(&t, &v);
        }
    }
}

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    STATS.hit(0);
    records(data);
    raw_tables(data);
    let Ok(c) = CompiledPolicy::from_cbor("fuzz.bpfgate", data) else { return };
    STATS.hit(2);
    c.validate("fuzz.bpfgate").expect("from_cbor validated it");
    check_round_trips(&c);
    let mut subjects: Vec<Subject> = fixed_subjects();
    let exes = c.exe_keys.iter().map(|k| Some(k.path.clone())).chain(std::iter::repeat(None));
    let cgroups = c.cgroup_keys.iter().map(|k| Some(k.path.clone())).chain(std::iter::repeat(None));
    let uids = c.uid_keys.iter().map(|k| Some(k.uid)).chain(std::iter::repeat(None));
    let n = c.exe_keys.len().max(c.cgroup_keys.len()).max(c.uid_keys.len()).min(SUBJECT_KEYS);
    subjects_for(&mut subjects, exes.zip(cgroups).zip(uids).map(|((e, g), u)| (e, g, u)).take(n));
    evaluate_all(&c, &subjects, |_, _, v| STATS.hit(if v.rule.is_some() { 3 } else { 4 }));
}
