//! The policy as data: what a parsed, validated policy file says (schema version 1, see `docs/policy.md`).
//!
//! Every item that an error or warning can point at keeps its [`Loc`] in the source file.

use std::fmt;

use serde::Serialize;

use crate::gate_abi;
use crate::metadata::ClassSet;
use crate::progtype::{AttachType, ProgType};

/// The only policy schema version this library reads.
pub const POLICY_VERSION: u32 = 1;

/// Longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` - 1); map names are compared on this many bytes.
pub const MAP_NAME_LEN: usize = 15;

/// A position in the policy file, both 1-based. `0:0` for items built in code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Loc {
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based.
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A value and where the file says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    #[serde(skip)]
    /// Where it is written.
    pub loc: Loc,
}

impl<T> Located<T> {
    /// `value` written at `loc`.
    pub fn new(value: T, loc: Loc) -> Self {
        Located { value, loc }
    }
    /// For policies built in code (tests, generators).
    pub fn bare(value: T) -> Self {
        Located { value, loc: Loc::default() }
    }
}

/// Global mode: `audit` turns every denial into an audit (load allowed, reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    /// Denials refuse the load.
    Enforce,
    /// Denials are reported and the load goes ahead.
    Audit,
}

impl Mode {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
    /// Every mode.
    pub const ALL: [Mode; 2] = [Mode::Enforce, Mode::Audit];
}

/// What a rule (or the default) does with the programs of the subjects it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Allow programs that meet the rule's constraints, deny the others.
    #[default]
    Allow,
    /// Deny every program of the subject.
    Deny,
    /// Allow every program of the subject and report it, with the constraints it breaks.
    Audit,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 3] = [Action::Allow, Action::Deny, Action::Audit];
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Audit => "audit",
        }
    }
    /// The number in the compiled form.
    pub fn number(self) -> u8 {
        match self {
            Action::Allow => gate_abi::ACTION_ALLOW,
            Action::Deny => gate_abi::ACTION_DENY,
            Action::Audit => gate_abi::ACTION_AUDIT,
        }
    }
    /// The action with [`Action::number`] `n`.
    pub fn from_number(n: u8) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.number() == n)
    }
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The file name given to the parser, for diagnostics.
    pub file: String,
    /// The policy schema version ([`POLICY_VERSION`]).
    pub version: u32,
    /// Enforce or audit.
    pub mode: Mode,
    /// The action for subjects no rule matches.
    pub default: Action,
    /// In file order: the first rule whose subject matches decides.
    pub rules: Vec<Rule>,
}

/// Who a rule is about. Every given field must match; a rule with no field matches every subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubjectMatch {
    /// Absolute paths of the loading executable (`exe: PATH` or `exe: [PATH, ...]`: any of them; empty: any
    /// executable); the gate compares each file's device and inode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exe: Vec<Located<String>>,
    /// Absolute cgroup v2 path (from the cgroup root); matches that cgroup and every cgroup below it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Located<String>>,
    /// Real uid of the loading task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<Located<u32>>,
}

impl SubjectMatch {
    /// Whether the subject matches everyone.
    pub fn is_any(&self) -> bool {
        self.exe.is_empty() && self.cgroup.is_none() && self.uid.is_none()
    }
}

/// Which maps a rule's programs may write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapWrite {
    /// Any map (subject to `pinned`).
    #[default]
    Any,
    /// Only maps the subject created.
    Own,
    /// No map, except the `named` ones.
    None,
}

impl MapWrite {
    /// Every value.
    pub const ALL: [MapWrite; 3] = [MapWrite::Any, MapWrite::Own, MapWrite::None];
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            MapWrite::Any => "any",
            MapWrite::Own => "own",
            MapWrite::None => "none",
        }
    }
    /// The number in compiled rules ([`RuleRecord::map_write`](super::compiled::RuleRecord::map_write)).
    pub fn number(self) -> u8 {
        match self {
            MapWrite::Any => gate_abi::MAP_WRITE_ANY,
            MapWrite::Own => gate_abi::MAP_WRITE_OWN,
            MapWrite::None => gate_abi::MAP_WRITE_NONE,
        }
    }
}

/// Map rules of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapRule {
    /// Which maps the program may write.
    pub write: MapWrite,
    /// Maps that may be written whatever `write` and `pinned` say (exact names or `prefix*`).
    pub named: Vec<Pattern>,
    /// Whether writable maps may be pinned (shared through bpffs with other processes).
    pub pinned: bool,
}

impl Default for MapRule {
    fn default() -> Self {
        MapRule { write: MapWrite::Any, named: Vec::new(), pinned: true }
    }
}

impl MapRule {
    /// True when some written map could be refused by this rule.
    pub fn restricts(&self) -> bool {
        self.write != MapWrite::Any || !self.pinned
    }
}

/// A glob over names: `*` matches any run of characters, `?` any one character; everything else is literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pattern {
    /// The glob as written.
    pub text: String,
    #[serde(skip)]
    /// Where it is written.
    pub loc: Loc,
}

impl Pattern {
    /// A pattern built in code (no location).
    pub fn new(text: impl Into<String>) -> Self {
        Pattern { text: text.into(), loc: Loc::default() }
    }

    /// Whether `name` matches the glob. Iterative with one backtrack point, so linear-ish and never recursive.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.text.as_bytes(), name.as_bytes())
    }

    /// The kernel form of this pattern: an exact name or a prefix, or why neither expresses it.
    pub fn kernel_form(&self) -> Result<KernelPattern<'_>, &'static str> {
        let t = self.text.as_str();
        if t.contains('?') {
            return Err("`?` cannot be evaluated by the kernel gate; use an exact name or a trailing `*`");
        }
        match t.find('*') {
            None => Ok(KernelPattern::Exact(t)),
            Some(i) if i + 1 == t.len() => Ok(KernelPattern::Prefix(&t[..i])),
            Some(_) => Err("`*` is only allowed at the end for the kernel gate (exact names and `prefix*`)"),
        }
    }
}

/// What the kernel gate can compare: a whole name or a name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPattern<'a> {
    /// This name exactly.
    Exact(&'a str),
    /// Names starting with this.
    Prefix(&'a str),
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Capability classes a rule allows and denies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassRule {
    /// When given, a program may use only these classes.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_classes")]
    pub allow: Option<ClassSet>,
    /// A program may use none of these classes.
    #[serde(serialize_with = "ser_classes")]
    pub deny: ClassSet,
}

fn ser_classes<S: serde::Serializer>(c: &ClassSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(c.iter().map(super::super::metadata::Capability::name))
}

fn ser_opt_classes<S: serde::Serializer>(c: &Option<ClassSet>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => ser_classes(c, s),
        None => s.serialize_none(),
    }
}

/// One rule: a subject, an action, and the constraints its programs must meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule's name, unique in the policy.
    pub name: String,
    /// Where the rule starts (its `- ` item).
    #[serde(skip)]
    pub loc: Loc,
    /// Who the rule applies to.
    pub subject: SubjectMatch,
    /// What it does with their programs.
    pub action: Action,
    /// Classes allowed and denied.
    pub capabilities: ClassRule,
    /// When given, the only program types allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prog_types: Option<Vec<ProgType>>,
    /// When given, the only expected attach types allowed (programs without one are not constrained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_types: Option<Vec<AttachType>>,
    /// When given, attach targets (kernel functions, tracepoints, LSM hooks) must match one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_targets: Option<Vec<Pattern>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// When given, the most instructions a program may have.
    pub max_insns: Option<u32>,
    /// Map rules.
    pub maps: MapRule,
    /// Loaders' feature probes, admitted whatever `prog_types`, `attach_types`, `attach_targets` and `max_insns`
    /// say ([`Probes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,
}

/// `probes:` of a rule: libbpf and bpftrace test what the kernel supports by loading tiny programs (a
/// two-instruction `socket_filter` or `tracepoint`, a `socket_filter` storing into its own global-data map) before
/// loading the real ones, and fail or lose features when a probe is refused. A program of one of `prog_types`,
/// with at most `max_insns` instructions and no class but `map_write`, passes the rule's program type, attach
/// type, attach target and instruction checks; its classes and map writes are judged as any program's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    /// Program types a probe may have.
    pub prog_types: Vec<ProgType>,
    /// The most instructions a probe may have (at most [`Probes::MAX_INSNS`]).
    pub max_insns: u32,
}

impl Probes {
    /// The largest `probes.max_insns` a policy may give: probes are a handful of instructions.
    pub const MAX_INSNS: u32 = 64;

    /// Whether a program of `prog_type` with `insns` instructions and `classes` is such a probe.
    pub fn admits(&self, prog_type: ProgType, insns: u32, classes: crate::ClassSet) -> bool {
        insns <= self.max_insns
            && self.prog_types.contains(&prog_type)
            && classes.0 & !crate::Capability::MapWrite.bit() == 0
    }
}

impl Rule {
    /// A rule that allows everything for `subject` (builder start for code and tests).
    pub fn allow_all(name: impl Into<String>, subject: SubjectMatch) -> Rule {
        Rule {
            name: name.into(),
            loc: Loc::default(),
            subject,
            action: Action::Allow,
            capabilities: ClassRule::default(),
            prog_types: None,
            attach_types: None,
            attach_targets: None,
            max_insns: None,
            probes: None,
            maps: MapRule::default(),
        }
    }

    /// True when the rule constrains programs at all (used to warn about constraints on `deny` rules).
    pub fn has_constraints(&self) -> bool {
        self.capabilities != ClassRule::default()
            || self.prog_types.is_some()
            || self.attach_types.is_some()
            || self.attach_targets.is_some()
            || self.max_insns.is_some()
            || self.maps != MapRule::default()
    }
}

/// Program types whose attach target names a kernel function, tracepoint or hook. When a rule lists
/// `attach_targets`, a program of one of these types that does not name its target is refused: the target
/// cannot be checked.
pub const TRACED_TYPES: [ProgType; 7] = [
    ProgType::Kprobe,
    ProgType::Tracepoint,
    ProgType::RawTracepoint,
    ProgType::RawTracepointWritable,
    ProgType::Tracing,
    ProgType::Lsm,
    ProgType::Ext,
];

/// Whether a program attaches where it could overrule the gate itself: an lsm program on one of the `bpf*`
/// LSM hooks, or `fmod_ret` on their functions (`bpf_lsm_bpf*`, `security_bpf*`). Such a program is refused
/// unless the rule that matches its subject lists `attach_targets` (and one of them matches): a policy must
/// name these hooks to allow them, a default or a rule without targets never does.
pub fn gate_hook(prog_type: u32, attach_type: Option<u32>, target: Option<&str>) -> bool {
    let Some(t) = target else { return false };
    if prog_type == ProgType::Lsm.number() {
        return t.starts_with("bpf");
    }
    prog_type == ProgType::Tracing.number()
        && attach_type == Some(AttachType::ModifyReturn.number())
        && (t.starts_with("bpf_lsm_bpf") || t.starts_with("security_bpf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        let m = |p: &str, s: &str| Pattern::new(p).matches(s);
        assert!(m("do_sys_*", "do_sys_open"));
        assert!(m("do_sys_*", "do_sys_"));
        assert!(!m("do_sys_*", "do_sy"));
        assert!(m("*", ""));
        assert!(m("vfs_?ead", "vfs_read"));
        assert!(m("*_open*", "do_sys_openat2"));
        assert!(!m("*_open", "do_sys_openat2"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("abc", "abcd"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn kernel_forms() {
        assert_eq!(Pattern::new("vfs_read").kernel_form(), Ok(KernelPattern::Exact("vfs_read")));
        assert_eq!(Pattern::new("tcp_*").kernel_form(), Ok(KernelPattern::Prefix("tcp_")));
        assert_eq!(Pattern::new("*").kernel_form(), Ok(KernelPattern::Prefix("")));
        assert!(Pattern::new("*_open").kernel_form().is_err());
        assert!(Pattern::new("a*b*").kernel_form().is_err());
        assert!(Pattern::new("vfs_?ead").kernel_form().is_err());
    }
}
