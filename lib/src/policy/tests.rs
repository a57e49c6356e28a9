//! Policy tests: one per rule kind and per error, the golden files under `tests/policy/`, the example
//! policies, and the source-versus-compiled differential proptest.
//!
//! Golden files are rewritten with `BLESS=1 cargo test -p bpfgate --lib policy`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::compiled::{self, CompiledPolicy, ExeKey, KernelProgram, KernelSubject, Resolver};
use super::*;
use crate::metadata::{Capability, ClassSet, HelperRef, MapAccess, MapDef, MapKind, ProgramMetadata};
use crate::progtype::{AttachType, ProgType};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(actual, expected, "golden {} differs (BLESS=1 rewrites it)", path.display());
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn parse(text: &str) -> Policy {
    match Policy::parse("t.yaml", text) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match Policy::parse("t.yaml", text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn prog(prog_type: ProgType) -> ProgramMetadata {
    ProgramMetadata {
        name: "p".into(),
        kernel_name: "p".into(),
        loaders: Vec::new(),
        section: "s".into(),
        section_offset: 0,
        prog_type,
        attach_type: None,
        attach_target: None,
        sleepable: false,
        unspec_reason: None,
        license: Some("GPL".into()),
        insn_count: 10,
        helpers: Vec::new(),
        kfuncs: Vec::new(),
        subprograms: Vec::new(),
        unreached_subprograms: Vec::new(),
        tail_calls: Vec::new(),
        maps: Vec::new(),
        capabilities: Vec::new(),
        evidence: BTreeMap::new(),
        kernel_view: Default::default(),
        notes: Vec::new(),
    }
}

fn with_class(mut p: ProgramMetadata, c: Capability, insns: &[u32]) -> ProgramMetadata {
    p.capabilities.push(c);
    p.capabilities.sort();
    p.evidence.insert(c, insns.to_vec());
    p
}

fn writes(mut p: ProgramMetadata, map: &str) -> ProgramMetadata {
    p.maps.push(MapAccess { name: map.into(), read: true, write: true });
    with_class(p, Capability::MapWrite, &[5])
}

fn mapdef(name: &str, pinning: u32) -> MapDef {
    MapDef {
        name: name.into(),
        kind: MapKind::Btf,
        map_type: 1,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        flags: 0,
        pinning,
        id: None,
        inner_map: None,
        inner_idx: None,
        read_only: false,
        kptr: false,
    }
}

fn root_exe(exe: &str) -> Subject {
    Subject { exe: Some(exe.into()), cgroup: None, uid: Some(0) }
}

const HEAD: &str = "version: 1\nrules:\n  - name: agent\n    subject: {exe: /usr/bin/agent}\n";

fn one_rule(extra: &str) -> Policy {
    parse(&format!("{HEAD}{extra}"))
}

fn agent() -> Subject {
    root_exe("/usr/bin/agent")
}

// ---- match semantics ------------------------------------------------------------------------------------------

#[test]
fn first_match_wins_even_when_a_later_rule_is_more_specific() {
    let p = parse(
        "version: 1\nrules:\n\
         - name: services\n  subject: {cgroup: /system.slice}\n  action: deny\n\
         - name: cilium\n  subject: {cgroup: /system.slice/cilium.service}\n",
    );
    let s = Subject { cgroup: Some("/system.slice/cilium.service".into()), ..Subject::default() };
    let v = p.evaluate(&s, &prog(ProgType::SchedCls), &[]);
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.rule, Some(MatchedRule { index: 0, name: "services".into() }));
    assert_eq!(v.reasons, vec![Reason::RuleDenies]);
    // ... and lint says the second rule can never apply.
    let w = p.lint();
    assert!(
        matches!(&w[..], [PolicyWarning { what: WarningKind::Unreachable { .. }, line: 6, column: 3, .. }]),
        "{w:?}"
    );
}

#[test]
fn a_rule_matches_only_when_every_subject_field_matches() {
    let p = parse(
        "version: 1\ndefault: deny\nrules:\n\
         - name: r\n  subject: {exe: /usr/bin/a, cgroup: /svc, uid: 0}\n",
    );
    let full = Subject { exe: Some("/usr/bin/a".into()), cgroup: Some("/svc/x".into()), uid: Some(0) };
    assert_eq!(p.evaluate(&full, &prog(ProgType::Kprobe), &[]).decision, Decision::Allow);
    for s in [
        Subject { uid: Some(1), ..full.clone() },
        Subject { exe: Some("/usr/bin/b".into()), ..full.clone() },
        Subject { cgroup: Some("/svcx".into()), ..full.clone() },
        Subject { cgroup: None, ..full.clone() },
        Subject { exe: None, ..full.clone() },
    ] {
        let v = p.evaluate(&s, &prog(ProgType::Kprobe), &[]);
        assert_eq!(v.rule, None, "{s:?}");
        assert_eq!(v.reasons, vec![Reason::NoRuleMatched { default: Action::Deny }]);
    }
}

/// `exe` takes one path or a list (a tool suite): any of them matches, each compiled to its own identity key with
/// the rule's bit; lint sees a list covering another rule's paths.
#[test]
fn exe_takes_a_list_of_executables() {
    let p = parse(
        "version: 1\ndefault: deny\nrules:\n\
         - name: tools\n  subject: {exe: [/usr/sbin/runqlat, /usr/sbin/biolatency, /usr/sbin/runqlat], uid: 0}\n\
         - name: one\n  subject: {exe: /usr/sbin/biolatency, uid: 0}\n",
    );
    let paths: Vec<&str> = p.rules[0].subject.exe.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(paths, ["/usr/sbin/runqlat", "/usr/sbin/biolatency"], "duplicates dropped");
    for exe in ["/usr/sbin/runqlat", "/usr/sbin//biolatency"] {
        let v = p.evaluate(&root_exe(exe), &prog(ProgType::Kprobe), &[]);
        assert_eq!(v.rule.map(|r| r.index), Some(0), "{exe}");
    }
    let v = p.evaluate(&root_exe("/usr/sbin/tc"), &prog(ProgType::Kprobe), &[]);
    assert_eq!((v.rule, v.decision), (None, Decision::Deny));
    let w = p.lint();
    assert!(matches!(&w[..], [PolicyWarning { what: WarningKind::Unreachable { .. }, .. }]), "{w:?}");
    let c = crate::policy::compiled::compile(&p, 1).expect("compiles");
    let keys: Vec<(&str, u64)> = c.exe_keys.iter().map(|k| (k.path.as_str(), k.rules)).collect();
    assert_eq!(keys, [("/usr/sbin/biolatency", 0b11), ("/usr/sbin/runqlat", 0b01)]);
    assert_eq!(c.header.exe_any, 0);
    // Every entry is checked as a path; an empty list is an error, not "any".
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {exe: [/usr/bin/a, bin/b]}\n");
    assert!(e.iter().any(|m| m.contains("must be an absolute path")), "{e:?}");
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {exe: []}\n");
    assert!(e.iter().any(|m| m.contains("an empty list matches no executable")), "{e:?}");
}

/// `probes`: a tiny program of a probe type with no class but map_write passes the rule's type, attach, target
/// and size checks, in the source and the compiled evaluation alike; one instruction more, another class or
/// another type, and the rule's checks apply again.
#[test]
fn feature_probes_pass_the_type_checks_and_nothing_more() {
    let p = parse(
        "version: 1\ndefault: deny\nrules:\n\
         - name: tools\n  subject: {exe: /usr/sbin/runqlat}\n  prog_types: [kprobe]\n  \
         attach_targets: [\"do_*\"]\n  max_insns: 1000\n  capabilities:\n    deny: [kernel_read]\n  \
         maps: {write: own}\n  probes:\n    prog_types: [socket_filter, tracepoint]\n    max_insns: 16\n",
    );
    let c = crate::policy::compiled::compile(&p, 1).expect("compiles").resolve(&FakeHost);
    let s = root_exe("/usr/sbin/runqlat");
    let sized = |mut prog: ProgramMetadata, n: u32| {
        prog.insn_count = n;
        prog
    };
    let cases = [
        (sized(prog(ProgType::SocketFilter), 2), Decision::Allow),
        (sized(prog(ProgType::Tracepoint), 16), Decision::Allow),
        (
            sized(writes(with_class(prog(ProgType::SocketFilter), Capability::MapWrite, &[1]), "bss"), 5),
            Decision::Allow,
        ),
        (sized(prog(ProgType::SocketFilter), 17), Decision::Deny),
        (sized(with_class(prog(ProgType::Tracepoint), Capability::TracePrintk, &[1]), 4), Decision::Deny),
        (sized(with_class(prog(ProgType::Tracepoint), Capability::KernelRead, &[1]), 4), Decision::Deny),
        (sized(prog(ProgType::Xdp), 2), Decision::Deny),
    ];
    let defs = [mapdef("bss", 0)];
    for (program, want) in cases {
        let v = p.evaluate(&s, &program, &defs);
        assert_eq!(v.decision, want, "{} {} insns: {v}", program.prog_type, program.insn_count);
        let k = KernelSubject::resolve(&s, &FakeHost);
        let got = compiled::evaluate(&c.tables, &k, &KernelProgram::from_metadata(&program, &defs));
        assert_eq!(got.decision, want, "compiled: {} {} insns", program.prog_type, program.insn_count);
    }
    let e =
        errors("version: 1\nrules:\n  - name: r\n    subject: {}\n    probes: {prog_types: [xdp], max_insns: 65}\n");
    assert!(e.iter().any(|m| m.contains("max_insns")), "{e:?}");
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {}\n    probes: {max_insns: 8}\n");
    assert!(e.iter().any(|m| m.contains("prog_types")), "{e:?}");
}

#[test]
fn cgroup_matches_descendants_and_paths_are_normalised() {
    assert!(eval::cgroup_within("/a/b/c", "/a/b"));
    assert!(eval::cgroup_within("/a/b", "/a/b/"));
    assert!(eval::cgroup_within("//a//b", "/a/b"));
    assert!(eval::cgroup_within("/anything", "/"));
    assert!(!eval::cgroup_within("/a/bc", "/a/b"));
    assert!(!eval::cgroup_within("/a", "/a/b"));
}

#[test]
fn empty_subject_matches_everyone_and_defaults_apply_otherwise() {
    let p = parse("version: 1\ndefault: allow\nrules: []\n");
    let v = p.evaluate(&Subject::default(), &prog(ProgType::Xdp), &[]);
    assert_eq!((v.decision, v.reasons.len()), (Decision::Allow, 0));
    let p = parse("version: 1\ndefault: audit\nrules: []\n");
    let v = p.evaluate(&Subject::default(), &prog(ProgType::Xdp), &[]);
    assert_eq!(v.decision, Decision::Audit);
    assert_eq!(v.reasons, vec![Reason::NoRuleMatched { default: Action::Audit }]);
    let p = parse("version: 1\nrules:\n  - name: all\n    subject: {}\n");
    assert_eq!(p.evaluate(&Subject::default(), &prog(ProgType::Xdp), &[]).decision, Decision::Allow);
    // No `default` means deny.
    let p = parse("version: 1\nrules: []\n");
    assert_eq!(p.default, Action::Deny);
}

#[test]
fn audit_mode_turns_denials_into_audits_and_keeps_reasons() {
    let p = parse(&format!("{}    prog_types: [xdp]\n", HEAD.replace("version: 1\n", "version: 1\nmode: audit\n")));
    let v = p.evaluate(&agent(), &prog(ProgType::Kprobe), &[]);
    assert_eq!(v.decision, Decision::Audit);
    assert_eq!(v.reasons, vec![Reason::ProgType { prog_type: ProgType::Kprobe }]);
}

#[test]
fn audit_rule_allows_and_reports() {
    let p = one_rule("    action: audit\n    prog_types: [xdp]\n");
    let v = p.evaluate(&agent(), &prog(ProgType::Kprobe), &[]);
    assert_eq!(v.decision, Decision::Audit);
    assert_eq!(v.reasons.len(), 1);
    let v = p.evaluate(&agent(), &prog(ProgType::Xdp), &[]);
    assert_eq!((v.decision, v.reasons.len()), (Decision::Audit, 0));
}

// ---- each rule kind -------------------------------------------------------------------------------------------

#[test]
fn denied_class_reports_offsets_and_helpers() {
    let p = one_rule("    capabilities:\n      deny: [user_write]\n");
    let mut pr = with_class(prog(ProgType::Kprobe), Capability::UserWrite, &[40, 52]);
    pr.helpers = vec![
        HelperRef { id: 36, name: "probe_write_user".into() },
        HelperRef { id: 1, name: "map_lookup_elem".into() },
    ];
    let v = p.evaluate(&agent(), &pr, &[]);
    assert_eq!(v.decision, Decision::Deny);
    let Reason::ClassDenied { class, evidence } = &v.reasons[0] else { panic!("{v:?}") };
    assert_eq!(*class, Capability::UserWrite);
    assert_eq!(evidence.insns, vec![40, 52]);
    // Which helpers carry the class comes from the catalogue; offsets come from the metadata.
    assert_eq!(evidence.helpers, vec!["probe_write_user".to_string()]);
    assert!(v.to_string().contains("write user memory, which the rule denies (user_write)"), "{v}");
}

#[test]
fn allow_list_refuses_every_other_class_including_unknown() {
    let p = one_rule("    capabilities:\n      allow: [kernel_read]\n");
    let pr = with_class(with_class(prog(ProgType::Kprobe), Capability::KernelRead, &[1]), Capability::Unknown, &[9]);
    let v = p.evaluate(&agent(), &pr, &[]);
    assert_eq!(
        v.reasons,
        vec![Reason::ClassNotAllowed {
            class: Capability::Unknown,
            evidence: Evidence { insns: vec![9], ..Evidence::default() }
        }]
    );
    let ok = with_class(prog(ProgType::Kprobe), Capability::KernelRead, &[1]);
    assert_eq!(p.evaluate(&agent(), &ok, &[]).decision, Decision::Allow);
}

#[test]
fn prog_type_and_attach_type_rules() {
    let p = one_rule("    prog_types: [tracing, kprobe]\n    attach_types: [trace_fentry]\n");
    let mut fexit = prog(ProgType::Tracing);
    fexit.attach_type = Some(AttachType::TraceFexit);
    let v = p.evaluate(&agent(), &fexit, &[]);
    assert_eq!(v.reasons, vec![Reason::AttachType { attach_type: AttachType::TraceFexit }]);
    // No expected attach type: attach_types does not apply.
    assert_eq!(p.evaluate(&agent(), &prog(ProgType::Kprobe), &[]).decision, Decision::Allow);
    let v = p.evaluate(&agent(), &prog(ProgType::Xdp), &[]);
    assert_eq!(v.reasons, vec![Reason::ProgType { prog_type: ProgType::Xdp }]);
}

#[test]
fn attach_target_rules() {
    let p = one_rule("    attach_targets: [\"do_sys_*\", vfs_read]\n");
    let mut k = prog(ProgType::Kprobe);
    k.attach_target = Some("do_sys_openat2".into());
    assert_eq!(p.evaluate(&agent(), &k, &[]).decision, Decision::Allow);
    k.attach_target = Some("tcp_connect".into());
    assert_eq!(p.evaluate(&agent(), &k, &[]).reasons, vec![Reason::AttachTarget { target: "tcp_connect".into() }]);
    k.attach_target = None;
    assert_eq!(
        p.evaluate(&agent(), &k, &[]).reasons,
        vec![Reason::AttachTargetUnknown { prog_type: ProgType::Kprobe }]
    );
    // Untraced types have no target and are not constrained.
    assert_eq!(p.evaluate(&agent(), &prog(ProgType::Xdp), &[]).decision, Decision::Allow);
}

#[test]
fn gate_hooks_need_a_rule_that_names_them() {
    let mut lsm = prog(ProgType::Lsm);
    lsm.attach_target = Some("bpf_prog_load".into());
    let hook = Reason::GateHook { target: "bpf_prog_load".into() };
    // A rule without attach_targets, and a default allow, never allow the gate's own hooks.
    let v = one_rule("");
    assert_eq!(v.evaluate(&agent(), &lsm, &[]).reasons, vec![hook.clone()]);
    let default_allow = parse("version: 1\ndefault: allow\nrules:\n  - name: x\n    subject: {uid: 7}\n");
    let v = default_allow.evaluate(&agent(), &lsm, &[]);
    assert_eq!((v.decision, v.reasons.last()), (Decision::Deny, Some(&hook)));
    // Naming the target allows it; other lsm hooks and fentry on the hook's function are not gate hooks.
    assert_eq!(
        one_rule("    attach_targets: [bpf_prog_load]\n").evaluate(&agent(), &lsm, &[]).decision,
        Decision::Allow
    );
    lsm.attach_target = Some("file_open".into());
    assert_eq!(v_allow(&one_rule(""), &lsm), Decision::Allow);
    let mut fmod = prog(ProgType::Tracing);
    fmod.attach_type = Some(AttachType::ModifyReturn);
    fmod.attach_target = Some("bpf_lsm_bpf_map".into());
    assert_eq!(
        one_rule("").evaluate(&agent(), &fmod, &[]).reasons,
        vec![Reason::GateHook { target: "bpf_lsm_bpf_map".into() }]
    );
    fmod.attach_type = Some(AttachType::TraceFentry);
    assert_eq!(v_allow(&one_rule(""), &fmod), Decision::Allow);
}

fn v_allow(p: &Policy, prog: &ProgramMetadata) -> Decision {
    p.evaluate(&agent(), prog, &[]).decision
}

#[test]
fn max_insns_rule() {
    let p = one_rule("    max_insns: 100\n");
    let mut k = prog(ProgType::Kprobe);
    k.insn_count = 100;
    assert_eq!(p.evaluate(&agent(), &k, &[]).decision, Decision::Allow);
    k.insn_count = 101;
    assert_eq!(p.evaluate(&agent(), &k, &[]).reasons, vec![Reason::TooManyInsns { insns: 101, max: 100 }]);
}

#[test]
fn map_rule_own_treats_pinned_maps_as_shared() {
    let p = one_rule("    maps: {write: own}\n");
    let k = writes(prog(ProgType::Xdp), "stats");
    assert_eq!(p.evaluate(&agent(), &k, &[mapdef("stats", 0)]).decision, Decision::Allow);
    // Without definitions every written map is the object's own.
    assert_eq!(p.evaluate(&agent(), &k, &[]).decision, Decision::Allow);
    let v = p.evaluate(&agent(), &k, &[mapdef("stats", 1)]);
    assert_eq!(v.reasons, vec![Reason::MapWrite { map: "stats".into(), why: MapRefusal::NotOwn }]);
}

#[test]
fn map_rule_pinned_deny() {
    let p = one_rule("    maps: {pinned: deny}\n");
    let k = writes(prog(ProgType::Xdp), "stats");
    assert_eq!(p.evaluate(&agent(), &k, &[mapdef("stats", 0)]).decision, Decision::Allow);
    let v = p.evaluate(&agent(), &k, &[mapdef("stats", 2)]);
    assert_eq!(v.reasons, vec![Reason::MapWrite { map: "stats".into(), why: MapRefusal::Pinned }]);
}

#[test]
fn map_rule_named_overrides_write_and_pinned() {
    let p = one_rule("    maps: {write: none, pinned: deny, named: [\"cilium_*\", events]}\n");
    let defs = [mapdef("cilium_ct4_global", 1), mapdef("events", 0), mapdef("other", 0)];
    for ok in ["cilium_ct4_global", "events"] {
        assert_eq!(p.evaluate(&agent(), &writes(prog(ProgType::SchedCls), ok), &defs).decision, Decision::Allow);
    }
    let v = p.evaluate(&agent(), &writes(prog(ProgType::SchedCls), "other"), &defs);
    assert_eq!(v.reasons, vec![Reason::MapWrite { map: "other".into(), why: MapRefusal::NotNamed }]);
}

#[test]
fn map_names_compare_on_the_kernels_15_bytes() {
    let p = one_rule("    maps: {write: none, named: [cilium_policy_v]}\n");
    // The kernel stores "cilium_policy_v" for both; a policy cannot tell them apart, so neither does the library.
    let v = p.evaluate(&agent(), &writes(prog(ProgType::SchedCls), "cilium_policy_v2"), &[]);
    assert_eq!(v.decision, Decision::Allow);
}

#[test]
fn unattributed_map_write_is_refused_only_under_map_restrictions() {
    let k = with_class(prog(ProgType::Kprobe), Capability::MapWrite, &[12]);
    assert_eq!(one_rule("").evaluate(&agent(), &k, &[]).decision, Decision::Allow);
    let v = one_rule("    maps: {write: own}\n").evaluate(&agent(), &k, &[]);
    assert_eq!(v.reasons, vec![Reason::UnattributedMapWrite { insns: vec![12] }]);
    // A write the analysis could not tie to a map of the object is unattributed too, even beside an own map:
    // never taken for a write to an own map named "(unknown map)".
    let k = writes(writes(k, crate::metadata::UNKNOWN_MAP), "own_map");
    let v = one_rule("    maps: {write: own}\n").evaluate(&agent(), &k, &[]);
    assert!(matches!(v.reasons[..], [Reason::UnattributedMapWrite { .. }]), "{:?}", v.reasons);
    assert!(KernelProgram::from_metadata(&k, &[]).unattributed_map_write);
}

#[test]
fn deny_rule_denies_everything_of_its_subject() {
    let p = one_rule("    action: deny\n");
    let v = p.evaluate(&agent(), &prog(ProgType::SocketFilter), &[]);
    assert_eq!((v.decision, v.reasons.clone()), (Decision::Deny, vec![Reason::RuleDenies]));
}

#[test]
fn every_reason_is_reported_in_order() {
    let p = one_rule(
        "    prog_types: [xdp]\n    attach_types: [xdp]\n    attach_targets: [vfs_read]\n    max_insns: 5\n\
         \x20   capabilities: {allow: [map_write], deny: [user_write]}\n    maps: {write: none}\n",
    );
    let mut k = writes(with_class(prog(ProgType::Tracing), Capability::UserWrite, &[3]), "m");
    k.attach_type = Some(AttachType::TraceFentry);
    k.attach_target = Some("tcp_connect".into());
    let v = p.evaluate(&agent(), &k, &[]);
    let bits: Vec<u32> = v.reasons.iter().map(super::eval::Reason::bit).collect();
    use reason_bits::*;
    assert_eq!(bits, vec![PROG_TYPE, ATTACH_TYPE, ATTACH_TARGET, INSNS, CLASS, MAP]);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["rule"]["name"], "agent");
    assert_eq!(json["reasons"][4]["kind"], "class_denied");
    assert_eq!(json["reasons"][4]["evidence"]["insns"][0], 3);
}

#[test]
fn evaluation_is_deterministic() {
    let p = parse(&std::fs::read_to_string(root().join("examples/policies/observability.yaml")).unwrap());
    let k = with_class(with_class(prog(ProgType::Kprobe), Capability::SendSignal, &[2]), Capability::UserWrite, &[1]);
    let s = root_exe("/usr/bin/bpftrace");
    let first = p.evaluate(&s, &k, &[]);
    for _ in 0..10 {
        assert_eq!(p.evaluate(&s, &k, &[]), first);
    }
}

// ---- errors ---------------------------------------------------------------------------------------------------

#[test]
fn unknown_field_points_at_the_key() {
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {exe: /a}\n    prog_type: [kprobe]\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.yaml:5:5: error: unknown field `prog_type` in a rule"), "{e:?}");
}

#[test]
fn comm_is_not_a_subject() {
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {comm: bpftrace}\n");
    assert!(
        e[0].starts_with("t.yaml:4:15: error: unknown field `comm` in a subject; expected one of: exe, cgroup, uid")
    );
}

#[test]
fn unknown_names_point_at_the_item() {
    let e = errors(&format!("{HEAD}    capabilities: {{deny: [user_write, kernel_write]}}\n"));
    assert!(e[0].starts_with("t.yaml:5:39: error: unknown capability class `kernel_write`"), "{e:?}");
    let e = errors(&format!("{HEAD}    prog_types:\n      - kprobe\n      - kprobes\n"));
    assert!(e[0].starts_with("t.yaml:7:9: error: unknown program type `kprobes`"), "{e:?}");
    let e = errors(&format!("{HEAD}    attach_types: [fentry]\n"));
    assert!(e[0].starts_with("t.yaml:5:20: error: unknown attach type `fentry`"), "{e:?}");
}

#[test]
fn contradiction_points_at_the_denied_entry() {
    let e = errors(&format!("{HEAD}    capabilities:\n      allow: [map_write]\n      deny: [map_write]\n"));
    assert_eq!(e, vec!["t.yaml:7:14: error: capability class `map_write` is both allowed and denied".to_string()]);
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let e = errors(
        "version: 1\nrules:\n  - name: a\n    subject: {comm: x}\n  - name: b\n    subject: {uid: 0}\n    \
         prog_types: [kprobes]\n    capabilities: {allow: [signal]}\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains(":4:15:") && e[1].contains(":7:18:") && e[2].contains(":8:28:"), "{e:?}");
}

#[test]
fn quoted_numbers_are_not_integers() {
    let e = errors("version: 1\nrules:\n  - name: r\n    subject: {uid: \"0\"}\n");
    assert!(e[0].contains("uid: expected an integer, found a string"), "{e:?}");
}

// ---- golden files ---------------------------------------------------------------------------------------------

fn lint_text(file: &str, text: &str) -> String {
    let mut out = String::new();
    match Policy::parse(file, text) {
        Ok(p) => {
            for w in p.lint() {
                out.push_str(&format!("{w}\n"));
            }
        }
        Err(e) => {
            for e in e.0 {
                out.push_str(&format!("{e}\n"));
            }
        }
    }
    out
}

#[test]
fn golden_lint() {
    let dir = root().join("tests/policy/lint");
    let files = yaml_files(&dir);
    assert!(files.len() > 30);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        golden(&f.with_extension("out"), &lint_text(&file_name(&f), &text));
    }
}

fn compile_text(file: &str, text: &str) -> String {
    let p = match Policy::parse(file, text) {
        Ok(p) => p,
        Err(e) => return format!("{e}\n"),
    };
    match compiled::compile(&p, 7) {
        Err(e) => format!("{e}\n"),
        Ok(c) => {
            // The fixed-size records, as the daemon writes them into the gate's maps: this pins the layout.
            let mut s = format!("header {}\n", hex(&c.header.to_le_bytes()));
            for (i, r) in c.rules.iter().enumerate() {
                s.push_str(&format!("rule {i} {}\n", hex(&r.to_le_bytes())));
            }
            for k in &c.exe_keys {
                s.push_str(&format!("exe {} {:#x}\n", k.path, k.rules));
            }
            for k in &c.cgroup_keys {
                s.push_str(&format!("cgroup {} {:#x}\n", k.path, k.rules));
            }
            for k in &c.uid_keys {
                s.push_str(&format!("uid {} {:#x}\n", k.uid, k.rules));
            }
            for t in &c.targets {
                s.push_str(&format!("target {}\n", hex(&t.to_le_bytes::<{ compiled::TARGET_PATTERN_LEN }>())));
            }
            for t in &c.map_names {
                s.push_str(&format!("map {}\n", hex(&t.to_le_bytes::<16>())));
            }
            s
        }
    }
}

fn hex(b: &[u8]) -> String {
    // Trailing zero padding says nothing; keep lines short.
    let end = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
    let mut s: String = b[..end].iter().map(|x| format!("{x:02x}")).collect();
    if end < b.len() {
        s.push_str(&format!("..({} zero bytes)", b.len() - end));
    }
    s
}

#[test]
fn golden_compile() {
    let dir = root().join("tests/policy/compile");
    for f in yaml_files(&dir) {
        let text = std::fs::read_to_string(&f).unwrap();
        golden(&f.with_extension("out"), &compile_text(&file_name(&f), &text));
    }
}

#[derive(serde::Deserialize)]
struct GoldenProgram {
    program: ProgramMetadata,
    maps: Vec<MapDef>,
}

#[derive(serde::Deserialize)]
struct Case {
    subject: CaseSubject,
    programs: Vec<String>,
}

#[derive(serde::Deserialize)]
struct CaseSubject {
    exe: Option<String>,
    cgroup: Option<String>,
    uid: Option<u32>,
}

fn examples() -> Vec<PathBuf> {
    yaml_files(&root().join("examples/policies"))
}

#[test]
fn golden_eval_of_the_examples() {
    let dir = root().join("tests/policy/eval");
    let programs: BTreeMap<String, GoldenProgram> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("programs.json")).unwrap()).unwrap();
    for ex in examples() {
        let stem = ex.file_stem().unwrap().to_string_lossy().into_owned();
        let policy = Policy::parse(&file_name(&ex), &std::fs::read_to_string(&ex).unwrap()).unwrap();
        let cases: Vec<Case> =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.cases.json"))).unwrap()).unwrap();
        let mut out = String::new();
        for c in cases {
            let s = Subject { exe: c.subject.exe, cgroup: c.subject.cgroup, uid: c.subject.uid };
            out.push_str(&format!("subject exe={:?} cgroup={:?} uid={:?}\n", s.exe, s.cgroup, s.uid));
            for name in c.programs {
                let g = &programs[&name];
                let v = policy.evaluate(&s, &g.program, &g.maps);
                out.push_str(&format!("  {name} ({}): {}\n", g.program.prog_type, v.to_string().replace('\n', "\n  ")));
            }
        }
        golden(&dir.join(format!("{stem}.out")), &out);
    }
}

#[test]
fn examples_parse_lint_clean_and_compile() {
    let ex = examples();
    assert_eq!(ex.len(), 3);
    for f in ex {
        let p = Policy::parse(&file_name(&f), &std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(p.lint(), vec![], "{}", f.display());
        let c = compiled::compile(&p, 1).unwrap();
        assert_eq!(CompiledPolicy::from_cbor("x", &c.to_cbor()).unwrap(), c);
    }
}

// ---- compiled form --------------------------------------------------------------------------------------------

#[test]
fn compile_rejects_patterns_the_kernel_cannot_express() {
    let p = one_rule("    attach_targets: [do_sys_open, \"*_open\"]\n");
    let e = compiled::compile(&p, 0).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, 5);
    assert_eq!(e.0[0].column, 35);
    assert!(matches!(e.0[0].what, ErrorKind::NotKernelExpressible { .. }));
    // lint says so beforehand, as a warning.
    assert!(matches!(p.lint()[..], [PolicyWarning { what: WarningKind::NotKernelExpressible { .. }, .. }]));
}

#[test]
fn cbor_and_record_round_trips() {
    let p = parse(&std::fs::read_to_string(root().join("examples/policies/network-agent.yaml")).unwrap());
    let c = compiled::compile(&p, 42).unwrap();
    let bytes = c.to_cbor();
    assert_eq!(CompiledPolicy::from_cbor("f", &bytes).unwrap(), c);
    assert_eq!(compiled::Header::from_le_bytes(&c.header.to_le_bytes()).unwrap(), c.header);
    for r in &c.rules {
        assert_eq!(compiled::RuleRecord::from_le_bytes(&r.to_le_bytes()).unwrap(), *r);
    }
    for t in &c.map_names {
        assert_eq!(compiled::PatternRecord::from_le_bytes::<16>(&t.to_le_bytes::<16>()).unwrap(), *t);
    }
    assert!(CompiledPolicy::from_cbor("f", b"garbage").is_err());
    assert!(CompiledPolicy::from_cbor("f", &bytes[..bytes.len() / 2]).is_err());
    let mut bad = c.clone();
    bad.rules[0].target_count = 500;
    assert!(CompiledPolicy::from_cbor("f", &bad.to_cbor()).is_err());
    let mut bad = c;
    bad.header.magic = 0;
    assert!(CompiledPolicy::from_cbor("f", &bad.to_cbor()).is_err());
}

#[test]
fn helper_class_table_marks_unknown_ids() {
    let p = parse("version: 1\nrules: []\n");
    let c = compiled::compile(&p, 0).unwrap();
    for (id, classes) in c.helper_classes.iter().enumerate() {
        match crate::helpers::helper(id as u32) {
            Some(h) => assert_eq!(*classes, h.classes.0),
            None => assert_eq!(*classes, Capability::Unknown.bit()),
        }
    }
}

// ---- differential: compiled evaluation == source evaluation ----------------------------------------------------

/// Gives every path a distinct fake identity, as a host would.
struct FakeHost;

fn fake_id(path: &str) -> u64 {
    // FNV-1a: stable and distinct for the handful of paths used here.
    path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

impl Resolver for FakeHost {
    fn exe(&self, path: &str) -> Option<ExeKey> {
        Some(ExeKey { dev: 0x800001, ino: fake_id(path) })
    }
    fn cgroup(&self, path: &str) -> Option<u64> {
        Some(fake_id(path))
    }
}

const PROG_TYPES: [ProgType; 7] = [
    ProgType::Kprobe,
    ProgType::Tracepoint,
    ProgType::Xdp,
    ProgType::SchedCls,
    ProgType::Tracing,
    ProgType::Lsm,
    ProgType::CgroupSkb,
];
const ATTACH_TYPES: [AttachType; 6] = [
    AttachType::TraceFentry,
    AttachType::TraceFexit,
    AttachType::ModifyReturn,
    AttachType::Xdp,
    AttachType::LsmMac,
    AttachType::CgroupInetIngress,
];
const TARGET_PATTERNS: [&str; 6] = ["do_sys_*", "vfs_read", "*", "tcp_*", "do_sys_open", "security_"];
const TARGETS: [&str; 8] = [
    "bpf_prog_load",
    "bpf_lsm_bpf_map",
    "do_sys_open",
    "do_sys_openat2",
    "vfs_read",
    "tcp_connect",
    "security_file_open",
    "a_kernel_function_with_a_name_longer_than_the_sixty_four_byte_pattern_slot_of_the_gate",
];
const MAP_PATTERNS: [&str; 5] = ["counts", "shared*", "cilium_*", "a_very_long_map", "*"];
const MAPS: [&str; 5] = ["counts", "shared_stats", "cilium_ct4_global", "a_very_long_map_name", "events"];
const EXES: [&str; 2] = ["/usr/bin/a", "/usr/bin/b"];
const CGROUPS: [&str; 4] = ["/", "/a", "/a/b", "/c"];

fn subset<T: Clone + std::fmt::Debug>(pool: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    proptest::sample::subsequence(pool.to_vec(), 0..=pool.len())
}

fn classes() -> impl Strategy<Value = ClassSet> {
    (0u32..(1 << Capability::ALL.len())).prop_map(ClassSet)
}

fn subject_match() -> impl Strategy<Value = SubjectMatch> {
    (
        proptest::option::of(proptest::sample::select(EXES.to_vec())),
        proptest::option::of(proptest::sample::select(CGROUPS.to_vec())),
        proptest::option::of(prop_oneof![Just(0u32), Just(1000u32)]),
    )
        .prop_map(|(e, c, u)| SubjectMatch {
            exe: e.map(|e| Located::bare(e.to_string())).into_iter().collect(),
            cgroup: c.map(|c| Located::bare(c.to_string())),
            uid: u.map(Located::bare),
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        subject_match(),
        proptest::sample::select(Action::ALL.to_vec()),
        (proptest::option::of(classes()), classes()),
        proptest::option::of(subset(&PROG_TYPES)),
        proptest::option::of(subset(&ATTACH_TYPES)),
        proptest::option::of(subset(&TARGET_PATTERNS)),
        proptest::option::of(prop_oneof![Just(50u32), Just(100), Just(1000)]),
        (proptest::sample::select(MapWrite::ALL.to_vec()), subset(&MAP_PATTERNS), any::<bool>()),
        proptest::option::of((subset(&PROG_TYPES), prop_oneof![Just(2u32), Just(60)])),
    )
        .prop_map(
            |(subject, action, (allow, deny), pt, at, targets, max_insns, (write, named, pinned), probes)| {
                // A class both allowed and denied is a parse error, so generated rules never have one.
                let deny = ClassSet(deny.0 & !allow.map_or(0, |a| a.0));
                Rule {
                    action,
                    capabilities: ClassRule { allow, deny },
                    prog_types: pt,
                    attach_types: at,
                    attach_targets: targets.map(|t| t.into_iter().map(Pattern::new).collect()),
                    max_insns,
                    maps: MapRule { write, named: named.into_iter().map(Pattern::new).collect(), pinned },
                    probes: probes
                        .map(|(prog_types, max_insns)| crate::policy::schema::Probes { prog_types, max_insns }),
                    ..Rule::allow_all("r", subject)
                }
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        proptest::sample::select(Mode::ALL.to_vec()),
        proptest::sample::select(Action::ALL.to_vec()),
        proptest::collection::vec(rule(), 0..8),
    )
        .prop_map(|(mode, default, mut rules)| {
            for (i, r) in rules.iter_mut().enumerate() {
                r.name = format!("r{i}");
            }
            Policy { file: "gen.yaml".into(), version: 1, mode, default, rules }
        })
}

fn subject() -> impl Strategy<Value = Subject> {
    (
        proptest::option::of(prop_oneof![Just("/usr/bin/a"), Just("/usr/bin/b"), Just("/usr/bin//a"), Just("/x")]),
        proptest::option::of(prop_oneof![
            Just("/"),
            Just("/a"),
            Just("/a/b"),
            Just("/a/b/c"),
            Just("/a/bc"),
            Just("/c/d/"),
            Just("/d")
        ]),
        proptest::option::of(prop_oneof![Just(0u32), Just(1000u32), Just(5u32)]),
    )
        .prop_map(|(e, c, u)| Subject { exe: e.map(Into::into), cgroup: c.map(Into::into), uid: u })
}

fn program() -> impl Strategy<Value = (ProgramMetadata, Vec<MapDef>)> {
    (
        proptest::sample::select([&PROG_TYPES[..], &[ProgType::Unspec, ProgType::SkMsg]].concat()),
        proptest::option::of(proptest::sample::select(ATTACH_TYPES.to_vec())),
        proptest::option::of(proptest::sample::select(TARGETS.to_vec())),
        prop_oneof![Just(10u32), Just(50), Just(100), Just(101), Just(5000)],
        classes(),
        proptest::collection::vec((proptest::sample::select(MAPS.to_vec()), any::<bool>(), 0u32..3), 0..4),
    )
        .prop_map(|(pt, at, target, insns, classes, maps)| {
            let mut p = prog(pt);
            p.attach_type = at;
            p.attach_target = target.map(Into::into);
            p.insn_count = insns;
            for c in classes.iter() {
                p = with_class(p, c, &[1, 2]);
            }
            let mut defs = Vec::new();
            for (name, write, pinning) in maps {
                p.maps.push(MapAccess { name: name.into(), read: true, write });
                defs.push(mapdef(name, pinning));
            }
            (p, defs)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_evaluation_equals_source_evaluation(
        policy in policy(),
        subject in subject(),
        (prog, defs) in program(),
    ) {
        let source = policy.evaluate(&subject, &prog, &defs);
        let c = compiled::compile(&policy, 1).unwrap();
        // Go through the distribution format too.
        let c = CompiledPolicy::from_cbor("gen", &c.to_cbor()).unwrap();
        let resolved = c.resolve(&FakeHost);
        prop_assert!(resolved.unresolved.is_empty());
        let ks = KernelSubject::resolve(&subject, &FakeHost);
        let kp = KernelProgram::from_metadata(&prog, &defs);
        let k = compiled::evaluate(&resolved.tables, &ks, &kp);
        prop_assert_eq!(k.decision, source.decision);
        prop_assert_eq!(k.rule, source.rule.as_ref().map(|r| r.index as u32));
        prop_assert_eq!(k.reasons, source.reason_mask());
        if let (Some(i), Some(m)) = (k.rule, &source.rule) {
            prop_assert_eq!(&c.rule_names[i as usize], &m.name);
        }
    }

    #[test]
    fn records_round_trip(policy in policy()) {
        let c = compiled::compile(&policy, 9).unwrap();
        prop_assert_eq!(compiled::Header::from_le_bytes(&c.header.to_le_bytes()).unwrap(), c.header);
        for r in &c.rules {
            prop_assert_eq!(compiled::RuleRecord::from_le_bytes(&r.to_le_bytes()).unwrap(), *r);
        }
        for t in &c.targets {
            let b = t.to_le_bytes::<{ compiled::TARGET_PATTERN_LEN }>();
            prop_assert_eq!(&compiled::PatternRecord::from_le_bytes::<{ compiled::TARGET_PATTERN_LEN }>(&b).unwrap(), t);
        }
    }

    #[test]
    fn parser_never_panics(text in "[a-z0-9_:{}\\[\\], \\n\\t'\"*&!%|>#?@-]{0,300}") {
        let _ = Policy::parse("fuzz.yaml", &text);
    }
}

/// The differential test is only as good as its inputs: check that they reach every decision, both match kinds
/// and every reason kind, so a generator change cannot quietly make it vacuous.
#[test]
fn differential_inputs_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (policy(), subject(), program());
    let (mut decisions, mut reasons, mut by_rule, mut by_default) = (BTreeMap::new(), 0u32, 0, 0);
    for _ in 0..2000 {
        let (p, s, (prog, defs)) = strategy.new_tree(&mut runner).unwrap().current();
        let v = p.evaluate(&s, &prog, &defs);
        *decisions.entry(v.decision.name()).or_insert(0) += 1;
        reasons |= v.reason_mask();
        if v.rule.is_some() {
            by_rule += 1;
        } else {
            by_default += 1;
        }
    }
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert!(decisions.values().all(|n| *n > 100), "{decisions:?}");
    assert!(by_rule > 300 && by_default > 300, "{by_rule} {by_default}");
    assert_eq!(reasons, (1 << 8) - 1, "{reasons:#b}");
}

/// The compiled policy's pattern records encode as the gate's pattern-table records.
#[test]
fn pattern_records_are_the_pattern_tables_records() {
    use crate::gate_abi::{NAME_LEN, PATTERN_PREFIX, TARGET_PATTERN_LEN};
    use crate::policy::compiled::PatternRecord;
    let p = PatternRecord { kind: PATTERN_PREFIX, text: "vfs_".into() };
    let t = p.target_record();
    assert_eq!((t.kind, t.len, &t.text[..5]), (PATTERN_PREFIX, 4, &b"vfs_\0"[..]));
    assert_eq!(t.to_le_bytes().to_vec(), p.to_le_bytes::<TARGET_PATTERN_LEN>());
    let m = p.map_record();
    assert_eq!((m.kind, m.len, &m.text[..5]), (PATTERN_PREFIX, 4, &b"vfs_\0"[..]));
    assert_eq!(m.to_le_bytes().to_vec(), p.to_le_bytes::<NAME_LEN>());
}
