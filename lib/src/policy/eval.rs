//! Source evaluation: one program of one subject against a [`Policy`], with every reason for a denial.
//!
//! Match semantics: rules are tried in file order and the first whose subject matches decides (first match).
//! No later rule is consulted, whether the first one allows or denies.

use std::fmt;

use serde::Serialize;

use super::parse::normalize_path;
use super::schema::{gate_hook, Action, MapWrite, Mode, Policy, Rule, SubjectMatch, MAP_NAME_LEN, TRACED_TYPES};
use crate::metadata::{Capability, ClassSet, MapDef, ProgramMetadata, UNKNOWN_MAP};
use crate::progtype::{AttachType, ProgType};

/// Who is loading: what the daemon (or `bpfgate check`) knows about the loading task. Unknown fields are `None`
/// and never match a rule that constrains them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Subject {
    /// Absolute path of the executable.
    pub exe: Option<String>,
    /// cgroup v2 path of the task, from the cgroup root.
    pub cgroup: Option<String>,
    /// User id of the task.
    pub uid: Option<u32>,
}

/// The outcome for one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Load allowed.
    Allow,
    /// Load refused.
    Deny,
    /// Load allowed, and reported.
    Audit,
}

impl Decision {
    /// The snake_case name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Audit => "audit",
        }
    }
    /// The number the gate uses in events.
    pub fn number(self) -> u8 {
        match self {
            Decision::Allow => crate::gate_abi::VERDICT_ALLOW,
            Decision::Deny => crate::gate_abi::VERDICT_DENY,
            Decision::Audit => crate::gate_abi::VERDICT_AUDIT,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Audit => "AUDIT",
        })
    }
}

/// The rule that decided: its position in the file (0-based) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MatchedRule {
    /// Position in the file, 0-based.
    pub index: usize,
    /// The rule's name.
    pub name: String,
}

/// Where a capability shows in the program: instruction offsets (linked layout, from
/// `ProgramMetadata::evidence`) and the called helpers and kfuncs whose catalogue entry carries the class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Evidence {
    /// Instruction offsets in the linked layout.
    pub insns: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// Called helpers whose class it is.
    pub helpers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// Called kfuncs whose class it is.
    pub kfuncs: Vec<String>,
}

/// Why a written map is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapRefusal {
    /// `maps.write: none` and the map is not in `maps.named`.
    NotNamed,
    /// `maps.write: own` and the subject did not create the map.
    NotOwn,
    /// `maps.pinned: deny` and the map is pinned.
    Pinned,
}

/// One reason for a denial (or, under an audit rule or mode, for a report).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// No rule matches the subject and the policy default is `deny` or `audit`.
    NoRuleMatched {
        /// The policy's default action.
        default: Action,
    },
    /// The matching rule's action is `deny`.
    RuleDenies,
    /// The program type is not in the rule's `prog_types`.
    ProgType {
        /// The program's type.
        prog_type: ProgType,
    },
    /// The expected attach type is not in the rule's `attach_types`.
    AttachType {
        /// The program's attach type.
        attach_type: AttachType,
    },
    /// The attach target matches none of the rule's `attach_targets`.
    AttachTarget {
        /// The program's attach target.
        target: String,
    },
    /// The rule restricts attach targets and this traced program does not name one.
    AttachTargetUnknown {
        /// The program's type.
        prog_type: ProgType,
    },
    /// The program attaches to a hook the gate itself uses, and no rule names that target
    /// ([`gate_hook`](super::schema::gate_hook)).
    GateHook {
        /// The hook.
        target: String,
    },
    /// The program has more instructions than the rule's `max_insns`.
    TooManyInsns {
        /// The program's instructions.
        insns: u32,
        /// The rule's limit.
        max: u32,
    },
    /// The class is in the rule's `capabilities.deny`.
    ClassDenied {
        /// The class.
        class: Capability,
        /// Where the program shows it.
        evidence: Evidence,
    },
    /// The rule has `capabilities.allow` and the class is not in it.
    ClassNotAllowed {
        /// The class.
        class: Capability,
        /// Where the program shows it.
        evidence: Evidence,
    },
    /// A written map the rule's `maps` refuses.
    MapWrite {
        /// The map's name.
        map: String,
        /// Which map rule refuses it.
        why: MapRefusal,
    },
    /// The program writes map memory the analysis could not tie to a map, and the rule restricts map writes.
    UnattributedMapWrite {
        /// The writing instructions.
        insns: Vec<u32>,
    },
}

/// Bits of the reason mask shared with the compiled evaluator (the gate reports these, with its own
/// `GATE_OBJECT`).
pub use crate::gate_abi::reason_bits;

impl Reason {
    /// The bit of this reason's kind in [`reason_bits`].
    pub fn bit(&self) -> u32 {
        use reason_bits::*;
        match self {
            Reason::NoRuleMatched { .. } => NO_RULE,
            Reason::RuleDenies => RULE_DENIES,
            Reason::ProgType { .. } => PROG_TYPE,
            Reason::AttachType { .. } => ATTACH_TYPE,
            Reason::AttachTarget { .. } | Reason::AttachTargetUnknown { .. } | Reason::GateHook { .. } => ATTACH_TARGET,
            Reason::TooManyInsns { .. } => INSNS,
            Reason::ClassDenied { .. } | Reason::ClassNotAllowed { .. } => CLASS,
            Reason::MapWrite { .. } | Reason::UnattributedMapWrite { .. } => MAP,
        }
    }
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.helpers.is_empty() {
            parts.push(format!("helper {}", self.helpers.join(", ")));
        }
        if !self.kfuncs.is_empty() {
            parts.push(format!("kfunc {}", self.kfuncs.join(", ")));
        }
        if !self.insns.is_empty() {
            parts.push(format!("at insn {}", list(&self.insns)));
        }
        if parts.is_empty() {
            f.write_str("no instruction recorded")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoRuleMatched { default } => {
                write!(f, "no rule matches this subject, and the policy default is {}", default.name())
            }
            Reason::RuleDenies => f.write_str("the rule denies every program of this subject"),
            Reason::ProgType { prog_type } => write!(f, "program type {prog_type} is not in the rule's prog_types"),
            Reason::AttachType { attach_type } => {
                write!(f, "attach type {attach_type} is not in the rule's attach_types")
            }
            Reason::AttachTarget { target } => {
                write!(f, "attach target {target} matches none of the rule's attach_targets")
            }
            Reason::AttachTargetUnknown { prog_type } => write!(
                f,
                "this {prog_type} program does not name its attach target, so the rule's attach_targets cannot be \
                 checked"
            ),
            Reason::GateHook { target } => write!(
                f,
                "it attaches to {target}, a hook the gate itself uses; only a rule listing it in attach_targets allows \
                 that"
            ),
            Reason::TooManyInsns { insns, max } => {
                write!(f, "{insns} instructions, more than the rule's max_insns of {max}")
            }
            Reason::ClassDenied { class, evidence } => {
                write!(f, "it can {}, which the rule denies ({class}): {evidence}", describe(*class))
            }
            Reason::ClassNotAllowed { class, evidence } => write!(
                f,
                "it can {}, which is not among the rule's allowed capabilities ({class}): {evidence}",
                describe(*class)
            ),
            Reason::MapWrite { map, why } => match why {
                MapRefusal::NotNamed => write!(f, "it writes map {map}, which is not in the rule's maps.named"),
                MapRefusal::NotOwn => write!(
                    f,
                    "it writes map {map}, which the subject did not create (maps.write: own; pinned maps are shared)"
                ),
                MapRefusal::Pinned => write!(f, "it writes map {map}, which is pinned (maps.pinned: deny)"),
            },
            Reason::UnattributedMapWrite { insns } => write!(
                f,
                "it writes a map the analysis could not name (at insn {}), and the rule restricts map writes",
                list(insns)
            ),
        }
    }
}

/// A class in plain words.
fn describe(c: Capability) -> &'static str {
    match c {
        Capability::KernelRead => "read kernel memory",
        Capability::UserRead => "read user memory",
        Capability::UserWrite => "write user memory",
        Capability::SendSignal => "send signals",
        Capability::OverrideReturn => "override kernel function return values",
        Capability::SysBpf => "issue bpf() syscalls",
        Capability::MapWrite => "write maps",
        Capability::TailCall => "tail-call other programs",
        Capability::Destructive => "take the machine down",
        Capability::TracePrintk => "write to the trace pipe",
        Capability::PacketWrite => "modify packets",
        Capability::Redirect => "redirect packets",
        Capability::Unknown => "call helpers or kfuncs the catalogue does not know",
    }
}

/// The decision for one program, the rule that made it, and every reason against it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Verdict {
    /// Allow, deny or audit.
    pub decision: Decision,
    /// `None` when no rule matched and the policy default decided.
    pub rule: Option<MatchedRule>,
    /// Empty for a plain allow; for deny and audit, every constraint the program breaks.
    pub reasons: Vec<Reason>,
}

/// `DENY by rule 0 (bpftrace)` then one `  - reason` line per reason.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "{} by rule {} ({})", self.decision, r.index, r.name)?,
            None => write!(f, "{} by the policy default", self.decision)?,
        }
        for r in &self.reasons {
            write!(f, "\n  - {r}")?;
        }
        Ok(())
    }
}

impl Verdict {
    /// The reason kinds as [`reason_bits`].
    pub fn reason_mask(&self) -> u32 {
        self.reasons.iter().fold(0, |m, r| m | r.bit())
    }
}

/// What the library knows about a written map: the object's map definitions decide pinning, and a map the
/// object defines and does not pin is taken as created by the subject loading the object. Only the kernel gate
/// can see real ownership (it records who created each map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFacts {
    /// The subject loading the object is taken to create it.
    pub own: bool,
    /// It is pinned: shared through bpffs.
    pub pinned: bool,
}

impl MapFacts {
    /// Facts for map `name` given the object's definitions; a map without a definition is treated as the
    /// object's own unpinned map (ProgramMetadata only names maps of its own object).
    pub fn of(name: &str, defs: &[MapDef]) -> MapFacts {
        let pinned = defs.iter().any(|d| d.name == name && d.pinning != 0);
        MapFacts { own: !pinned, pinned }
    }
}

/// The first `MAP_NAME_LEN` bytes of a map name: all the kernel keeps, so all a policy can compare.
pub(crate) fn kernel_map_name(name: &str) -> &str {
    let mut end = name.len().min(MAP_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Whether `subject_cg` is `rule_cg` or below it.
pub(crate) fn cgroup_within(subject_cg: &str, rule_cg: &str) -> bool {
    let s = normalize_path(subject_cg);
    let r = normalize_path(rule_cg);
    r == "/" || s == r || s.strip_prefix(&r).is_some_and(|rest| rest.starts_with('/'))
}

pub(crate) fn subject_matches(m: &SubjectMatch, s: &Subject) -> bool {
    let exe_ok = m.exe.is_empty()
        || s.exe.as_deref().is_some_and(|x| {
            let x = normalize_path(x);
            m.exe.iter().any(|e| e.value == x)
        });
    let cg_ok = match &m.cgroup {
        None => true,
        Some(c) => s.cgroup.as_deref().is_some_and(|x| cgroup_within(x, &c.value)),
    };
    let uid_ok = match &m.uid {
        None => true,
        Some(u) => s.uid == Some(u.value),
    };
    exe_ok && cg_ok && uid_ok
}

/// Classes a helper carries, from the catalogue; an id it does not know is `unknown`, as in the analysis, but
/// libbpf's poison ids, which no kernel executes ([`crate::target`]), carry none.
fn helper_classes(id: u32) -> ClassSet {
    match crate::helpers::helper(id) {
        Some(h) => h.classes,
        None if crate::target::poison(id).is_some() => ClassSet::EMPTY,
        None => ClassSet(Capability::Unknown.bit()),
    }
}

fn kfunc_classes(name: &str) -> ClassSet {
    crate::helpers::kfunc(name).map_or(ClassSet(Capability::Unknown.bit()), |k| k.classes)
}

fn evidence(prog: &ProgramMetadata, class: Capability) -> Evidence {
    let insns = prog.evidence.get(&class).cloned().unwrap_or_default();
    let mut helpers: Vec<String> =
        prog.helpers.iter().filter(|h| helper_classes(h.id).contains(class)).map(|h| h.name.clone()).collect();
    helpers.sort();
    helpers.dedup();
    let mut kfuncs: Vec<String> = prog.kfuncs.iter().filter(|k| kfunc_classes(k).contains(class)).cloned().collect();
    kfuncs.sort();
    kfuncs.dedup();
    Evidence { insns, helpers, kfuncs }
}

impl Policy {
    /// Decides `prog` for `subject`. `maps` are the object's map definitions ([`ObjectReport::maps`]): map rules
    /// judge a written map as pinned or shared by its definition, and a map missing from `maps` is taken as the
    /// subject's own and not pinned.
    ///
    /// [`ObjectReport::maps`]: crate::ObjectReport::maps
    pub fn evaluate(&self, subject: &Subject, prog: &ProgramMetadata, maps: &[MapDef]) -> Verdict {
        let found = self.rules.iter().enumerate().find(|(_, r)| subject_matches(&r.subject, subject));
        let Some((index, rule)) = found else {
            let (mut decision, mut reasons) = match self.default {
                Action::Allow => (Decision::Allow, Vec::new()),
                Action::Deny => (Decision::Deny, vec![Reason::NoRuleMatched { default: Action::Deny }]),
                Action::Audit => (Decision::Audit, vec![Reason::NoRuleMatched { default: Action::Audit }]),
            };
            if let Some(target) = gate_hook_target(prog) {
                // A default never allows the gate's own hooks: only a rule naming them does.
                if reasons.is_empty() {
                    reasons.push(Reason::NoRuleMatched { default: self.default });
                }
                reasons.push(Reason::GateHook { target });
                decision = Decision::Deny;
            }
            return self.finish(decision, None, reasons);
        };
        let matched = Some(MatchedRule { index, name: rule.name.clone() });
        if rule.action == Action::Deny {
            return self.finish(Decision::Deny, matched, vec![Reason::RuleDenies]);
        }
        let reasons = violations(rule, prog, maps);
        let decision = match (rule.action, reasons.is_empty()) {
            (Action::Audit, _) => Decision::Audit,
            (_, true) => Decision::Allow,
            (_, false) => Decision::Deny,
        };
        self.finish(decision, matched, reasons)
    }

    fn finish(&self, decision: Decision, rule: Option<MatchedRule>, reasons: Vec<Reason>) -> Verdict {
        let decision = match (self.mode, decision) {
            (Mode::Audit, Decision::Deny) => Decision::Audit,
            (_, d) => d,
        };
        Verdict { decision, rule, reasons }
    }
}

/// The maps `prog` writes, by name, sorted and deduplicated, and whether it also writes map memory the analysis
/// could not tie to one of them (an [`UNKNOWN_MAP`] access, or the `map_write` class with no written map).
pub(crate) fn written_maps(prog: &ProgramMetadata) -> (Vec<&str>, bool) {
    let mut written: Vec<&str> = prog.maps.iter().filter(|a| a.write).map(|a| a.name.as_str()).collect();
    written.sort();
    written.dedup();
    let unknown = written.iter().position(|&n| n == UNKNOWN_MAP).map(|i| written.remove(i)).is_some();
    let unattributed = unknown || (written.is_empty() && prog.class_set().contains(Capability::MapWrite));
    (written, unattributed)
}

fn gate_hook_target(prog: &ProgramMetadata) -> Option<String> {
    let target = prog.attach_target.as_deref();
    gate_hook(prog.prog_type.number(), prog.attach_type.map(AttachType::number), target)
        .then(|| target.unwrap_or_default().to_owned())
}

/// Every constraint of `rule` that `prog` breaks, in a fixed order: type, attach, size, classes, maps.
fn violations(rule: &Rule, prog: &ProgramMetadata, maps: &[MapDef]) -> Vec<Reason> {
    let mut out = Vec::new();
    // A feature probe passes the type, attach and size checks (Probes); not a gate hook.
    let probe = rule.probes.as_ref().is_some_and(|p| p.admits(prog.prog_type, prog.insn_count, prog.class_set()))
        && gate_hook_target(prog).is_none();
    if !probe {
        type_and_size(rule, prog, &mut out);
    }
    class_and_map(rule, prog, maps, &mut out);
    out
}

/// The program type, attach type, attach target and instruction checks of `violations`.
fn type_and_size(rule: &Rule, prog: &ProgramMetadata, out: &mut Vec<Reason>) {
    if let Some(types) = &rule.prog_types {
        if !types.contains(&prog.prog_type) {
            out.push(Reason::ProgType { prog_type: prog.prog_type });
        }
    }
    if let (Some(types), Some(at)) = (&rule.attach_types, prog.attach_type) {
        if !types.contains(&at) {
            out.push(Reason::AttachType { attach_type: at });
        }
    }
    if let Some(patterns) = &rule.attach_targets {
        match &prog.attach_target {
            Some(t) if !patterns.iter().any(|p| p.matches(t)) => out.push(Reason::AttachTarget { target: t.clone() }),
            Some(_) => {}
            None if TRACED_TYPES.contains(&prog.prog_type) => {
                out.push(Reason::AttachTargetUnknown { prog_type: prog.prog_type });
            }
            None => {}
        }
    }
    if rule.attach_targets.is_none() {
        if let Some(target) = gate_hook_target(prog) {
            out.push(Reason::GateHook { target });
        }
    }
    if let Some(max) = rule.max_insns {
        if prog.insn_count > max {
            out.push(Reason::TooManyInsns { insns: prog.insn_count, max });
        }
    }
}

/// The class and map checks of `violations`.
fn class_and_map(rule: &Rule, prog: &ProgramMetadata, maps: &[MapDef], out: &mut Vec<Reason>) {
    let classes = prog.class_set();
    for class in classes.iter() {
        if rule.capabilities.deny.contains(class) {
            out.push(Reason::ClassDenied { class, evidence: evidence(prog, class) });
        } else if rule.capabilities.allow.is_some_and(|a| !a.contains(class)) {
            out.push(Reason::ClassNotAllowed { class, evidence: evidence(prog, class) });
        }
    }
    let m = &rule.maps;
    let (written, unattributed) = written_maps(prog);
    for name in &written {
        let named = m.named.iter().any(|p| p.matches(kernel_map_name(name)));
        if named {
            continue;
        }
        let facts = MapFacts::of(name, maps);
        let why = match m.write {
            MapWrite::None => Some(MapRefusal::NotNamed),
            MapWrite::Own if !facts.own => Some(MapRefusal::NotOwn),
            _ if !m.pinned && facts.pinned => Some(MapRefusal::Pinned),
            _ => None,
        };
        if let Some(why) = why {
            out.push(Reason::MapWrite { map: (*name).to_owned(), why });
        }
    }
    if unattributed && m.restricts() {
        let insns = prog.evidence.get(&Capability::MapWrite).cloned().unwrap_or_default();
        out.push(Reason::UnattributedMapWrite { insns });
    }
}
