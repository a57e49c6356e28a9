//! The kernel form of a policy: fixed-size little-endian records the in-kernel gate holds in BPF maps, and
//! [`evaluate`], the gate's algorithm over them in Rust.
//!
//! Layout (all integers little-endian, sizes in the `*_SIZE` constants):
//! - [`Header`]: magic `BPFG`, format version, generation, mode, default action, rule count, and for each subject
//!   dimension the mask of rules that do not constrain it.
//! - Subject keys to rule masks (bit `i` = rule `i`; at most [`MAX_RULES`] rules): exe `(dev, ino)`, cgroup id,
//!   uid. A subject's candidate rules are `(exe[key] | exe_any) & (OR of cgroup[ancestor] | cgroup_any) &
//!   (uid[uid] | uid_any)`; the lowest set bit is the first matching rule, exactly the source's first match.
//! - [`RuleRecord`]s indexed by rule id: action, class bitmasks ([`ClassSet`](crate::ClassSet) bits), prog-type and attach-type
//!   bitmasks (bit = kernel number), max insns, map-rule flags, and slices of the two pattern tables.
//! - [`PatternRecord`] tables: attach-target patterns and map-name patterns, each exact or prefix.
//! - A helper-id to class table.
//!
//! The compiled file keeps exe and cgroup *paths* so it is portable; [`CompiledPolicy::resolve`] turns them into
//! device/inode and cgroup-id keys with a [`Resolver`] the daemon supplies on the host that enforces it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::eval::{kernel_map_name, reason_bits, written_maps, MapFacts, Subject};
use super::parse::normalize_path;
pub use super::schema::MAP_NAME_LEN;
use super::schema::{gate_hook, Action, KernelPattern, Mode, Pattern, Policy, TRACED_TYPES};
use super::{Decision, ErrorKind, PolicyErrors};
use crate::metadata::{MapDef, ProgramMetadata};

pub use crate::gate_abi::{
    rule_flags, Header, RuleRecord, FORMAT_VERSION, MAGIC, MAX_MAP_PATTERNS, MAX_RULES, MAX_TARGET_PATTERNS,
    PATTERN_EXACT, PATTERN_PREFIX, TARGET_PATTERN_LEN,
};
use crate::gate_abi::{MapPattern, TargetPattern, MODE_AUDIT, MODE_ENFORCE};
/// Helper ids the class table covers.
pub const HELPER_TABLE_LEN: usize = 512;

/// Bytes of a [`Header`] in the gate's map.
pub const HEADER_SIZE: usize = Header::SIZE;
/// Bytes of a [`RuleRecord`] in the gate's map.
pub const RULE_RECORD_SIZE: usize = RuleRecord::SIZE;
/// Bytes of an attach target pattern record in the gate's map.
pub const TARGET_RECORD_SIZE: usize = TargetPattern::SIZE;
/// Bytes of a map name pattern record in the gate's map.
pub const MAP_RECORD_SIZE: usize = MapPattern::SIZE;
/// Bytes of an [`ExeKey`] in the gate's map.
pub const EXE_KEY_SIZE: usize = 16;

/// Problems reading a compiled policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompiledError {
    #[error("{file}: not a compiled bpfgate policy: {what}")]
    /// The bytes are not a compiled policy.
    Decode {
        /// The file, as named by the caller.
        file: String,
        /// The decoder's message.
        what: String,
    },
    #[error("{file}: {record} record: {what}")]
    /// A record is out of range or inconsistent.
    Invalid {
        /// The file, as named by the caller.
        file: String,
        /// Which record.
        record: &'static str,
        /// What is wrong with it.
        what: String,
    },
}

/// An exact name or a prefix, in a bounded table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternRecord {
    /// [`PATTERN_EXACT`] or [`PATTERN_PREFIX`].
    pub kind: u8,
    /// The name, or its prefix.
    pub text: String,
}

/// A path subject key before resolution, and the rules it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathKey {
    /// The path (normalized).
    pub path: String,
    /// Bit `n`: rule `n` names this path.
    pub rules: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
/// A uid subject key and the rules it selects.
pub struct UidKey {
    /// The user id.
    pub uid: u32,
    /// Bit `n`: rule `n` names this uid.
    pub rules: u64,
}

/// A policy lowered for the kernel, portable (paths, not inodes). Serialized as CBOR for distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    /// Shape and defaults.
    pub header: Header,
    /// Rule names by rule id, for reports (not loaded into the kernel).
    pub rule_names: Vec<String>,
    /// Rules by rule id.
    pub rules: Vec<RuleRecord>,
    /// Executable paths, resolved to [`ExeKey`]s on the host.
    pub exe_keys: Vec<PathKey>,
    /// cgroup paths, resolved to cgroup ids on the host.
    pub cgroup_keys: Vec<PathKey>,
    /// Uids.
    pub uid_keys: Vec<UidKey>,
    /// Attach target patterns, sliced by the rules.
    pub targets: Vec<PatternRecord>,
    /// Map name patterns, sliced by the rules.
    pub map_names: Vec<PatternRecord>,
    /// Class bits ([`ClassSet`](crate::ClassSet)) by helper id; ids past the end are `unknown`.
    pub helper_classes: Vec<u32>,
}

/// Lower `policy` to the kernel form. Fails, with the location, on what the gate cannot express: more than
/// [`MAX_RULES`] rules, patterns other than exact names and `prefix*`, overlong patterns, full tables.
pub fn compile(policy: &Policy, generation: u64) -> Result<CompiledPolicy, PolicyErrors> {
    let mut errors = Vec::new();
    if let Some(extra) = policy.rules.get(MAX_RULES) {
        let what = ErrorKind::LimitExceeded { what: "rules", count: policy.rules.len(), max: MAX_RULES };
        errors.push(policy.error(extra.loc, what));
    }
    let mut c = CompiledPolicy {
        header: Header {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            generation,
            mode: match policy.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Audit => MODE_AUDIT,
            },
            default_action: policy.default.number(),
            rule_count: policy.rules.len().min(MAX_RULES) as u16,
            reserved: 0,
            exe_any: 0,
            cgroup_any: 0,
            uid_any: 0,
        },
        rule_names: Vec::new(),
        rules: Vec::new(),
        exe_keys: Vec::new(),
        cgroup_keys: Vec::new(),
        uid_keys: Vec::new(),
        targets: Vec::new(),
        map_names: Vec::new(),
        helper_classes: helper_class_table(),
    };
    let mut exe: BTreeMap<&str, u64> = BTreeMap::new();
    let mut cgroup: BTreeMap<&str, u64> = BTreeMap::new();
    let mut uid: BTreeMap<u32, u64> = BTreeMap::new();
    for (id, rule) in policy.rules.iter().enumerate().take(MAX_RULES) {
        let bit = 1u64 << id;
        if rule.subject.exe.is_empty() {
            c.header.exe_any |= bit;
        }
        for e in &rule.subject.exe {
            *exe.entry(e.value.as_str()).or_default() |= bit;
        }
        match &rule.subject.cgroup {
            Some(g) => *cgroup.entry(g.value.as_str()).or_default() |= bit,
            None => c.header.cgroup_any |= bit,
        }
        match &rule.subject.uid {
            Some(u) => *uid.entry(u.value).or_default() |= bit,
            None => c.header.uid_any |= bit,
        }
        let mut flags = 0u8;
        let mut prog_types = u64::MAX;
        if let Some(types) = &rule.prog_types {
            flags |= rule_flags::PROG_TYPES;
            prog_types = types.iter().fold(0, |m, t| m | bit_of(t.number()));
        }
        let mut attach_types = u64::MAX;
        if let Some(types) = &rule.attach_types {
            flags |= rule_flags::ATTACH_TYPES;
            attach_types = types.iter().fold(0, |m, t| m | bit_of(t.number()));
        }
        if rule.maps.pinned {
            flags |= rule_flags::PINNED_OK;
        }
        let target_first = c.targets.len();
        if let Some(pats) = &rule.attach_targets {
            flags |= rule_flags::ATTACH_TARGETS;
            lower(policy, pats, TARGET_PATTERN_LEN, &mut c.targets, &mut errors);
        }
        let map_first = c.map_names.len();
        lower(policy, &rule.maps.named, MAP_NAME_LEN, &mut c.map_names, &mut errors);
        c.rules.push(RuleRecord {
            action: rule.action.number(),
            map_write: rule.maps.write.number(),
            flags,
            reserved: 0,
            max_insns: rule.max_insns.unwrap_or(u32::MAX),
            allowed_classes: rule.capabilities.allow.map_or(u32::MAX, |a| a.0),
            denied_classes: rule.capabilities.deny.0,
            prog_types,
            attach_types,
            target_first: clamp16(target_first),
            target_count: clamp16(c.targets.len() - target_first),
            map_first: clamp16(map_first),
            map_count: clamp16(c.map_names.len() - map_first),
            probe_insns: rule.probes.as_ref().map_or(0, |p| p.max_insns),
            reserved2: 0,
            probe_types: rule.probes.as_ref().map_or(0, |p| p.prog_types.iter().fold(0, |m, t| m | bit_of(t.number()))),
        });
        c.rule_names.push(rule.name.clone());
    }
    table_limit(policy, "attach target patterns", c.targets.len(), MAX_TARGET_PATTERNS, &mut errors);
    table_limit(policy, "map name patterns", c.map_names.len(), MAX_MAP_PATTERNS, &mut errors);
    c.exe_keys = exe.into_iter().map(|(p, rules)| PathKey { path: p.to_owned(), rules }).collect();
    c.cgroup_keys = cgroup.into_iter().map(|(p, rules)| PathKey { path: p.to_owned(), rules }).collect();
    c.uid_keys = uid.into_iter().map(|(uid, rules)| UidKey { uid, rules }).collect();
    if errors.is_empty() {
        Ok(c)
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(PolicyErrors(errors))
    }
}

fn bit_of(n: u32) -> u64 {
    1u64.checked_shl(n).unwrap_or(0)
}

fn clamp16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn table_limit(policy: &Policy, what: &'static str, count: usize, max: usize, errors: &mut Vec<super::PolicyError>) {
    if count > max {
        let loc = super::Loc { line: 1, column: 1 };
        errors.push(policy.error(loc, ErrorKind::LimitExceeded { what, count, max }));
    }
}

fn lower(
    policy: &Policy,
    pats: &[Pattern],
    max_len: usize,
    out: &mut Vec<PatternRecord>,
    errors: &mut Vec<super::PolicyError>,
) {
    for p in pats {
        let rec = match p.kernel_form() {
            Ok(KernelPattern::Exact(s)) => PatternRecord { kind: PATTERN_EXACT, text: s.to_owned() },
            Ok(KernelPattern::Prefix(s)) => PatternRecord { kind: PATTERN_PREFIX, text: s.to_owned() },
            Err(why) => {
                errors.push(policy.error(p.loc, ErrorKind::NotKernelExpressible { pattern: p.text.clone(), why }));
                continue;
            }
        };
        if rec.text.len() > max_len {
            let why = if max_len == MAP_NAME_LEN {
                "longer than the 15 bytes the kernel keeps of a map name"
            } else {
                "longer than the gate's 64-byte pattern slot"
            };
            errors.push(policy.error(p.loc, ErrorKind::NotKernelExpressible { pattern: p.text.clone(), why }));
            continue;
        }
        out.push(rec);
    }
}

/// Class bits by helper id, from the catalogue. Ids the catalogue does not know carry `unknown`, as in the
/// analysis; the table stops after the last known id and the gate treats ids past its end as `unknown`.
fn helper_class_table() -> Vec<u32> {
    let unknown = crate::Capability::Unknown.bit();
    let mut t: Vec<u32> =
        (0..HELPER_TABLE_LEN as u32).map(|id| crate::helpers::helper(id).map_or(unknown, |h| h.classes.0)).collect();
    while t.last() == Some(&unknown) {
        t.pop();
    }
    t
}

impl CompiledPolicy {
    /// Encodes the policy as CBOR, the form `bpfgate policy compile` writes.
    pub fn to_cbor(&self) -> Vec<u8> {
        // Writing into a Vec cannot fail and every field serializes; an empty result would fail from_cbor.
        cbor4ii::serde::to_vec(Vec::new(), self).unwrap_or_default()
    }

    /// Decode and check a compiled policy: every slice and count must be in range, so the evaluator never
    /// reads outside a table.
    pub fn from_cbor(file: &str, bytes: &[u8]) -> Result<CompiledPolicy, CompiledError> {
        let c: CompiledPolicy = cbor4ii::serde::from_slice(bytes)
            .map_err(|e| CompiledError::Decode { file: file.to_owned(), what: e.to_string() })?;
        c.validate(file)?;
        Ok(c)
    }

    /// Checks every slice and count is in range, so the evaluator never reads outside a table.
    pub fn validate(&self, file: &str) -> Result<(), CompiledError> {
        let bad = |record: &'static str, what: String| CompiledError::Invalid { file: file.to_owned(), record, what };
        let h = &self.header;
        if h.magic != MAGIC {
            return Err(bad("header", format!("bad magic {:#010x}", h.magic)));
        }
        if h.format_version != FORMAT_VERSION {
            return Err(bad(
                "header",
                format!("format version {} (this bpfgate reads {FORMAT_VERSION})", h.format_version),
            ));
        }
        if h.mode > MODE_AUDIT || Action::from_number(h.default_action).is_none() {
            return Err(bad("header", "mode or default action out of range".into()));
        }
        let n = usize::from(h.rule_count);
        if n > MAX_RULES || self.rules.len() != n || self.rule_names.len() != n {
            return Err(bad("header", format!("rule count {n} does not match {} rules", self.rules.len())));
        }
        if self.targets.len() > MAX_TARGET_PATTERNS || self.map_names.len() > MAX_MAP_PATTERNS {
            return Err(bad("pattern", "table too large".into()));
        }
        if self.helper_classes.len() > HELPER_TABLE_LEN {
            return Err(bad("helper", "table too large".into()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let t_end = usize::from(r.target_first) + usize::from(r.target_count);
            let m_end = usize::from(r.map_first) + usize::from(r.map_count);
            if t_end > self.targets.len() || m_end > self.map_names.len() {
                return Err(bad("rule", format!("rule {i} points outside a pattern table")));
            }
            if Action::from_number(r.action).is_none() || r.map_write > 2 {
                return Err(bad("rule", format!("rule {i} has an unknown action or map rule")));
            }
        }
        for p in &self.targets {
            if p.kind > PATTERN_PREFIX || p.text.len() > TARGET_PATTERN_LEN {
                return Err(bad("pattern", format!("attach target pattern `{}` is malformed", p.text)));
            }
        }
        for p in &self.map_names {
            if p.kind > PATTERN_PREFIX || p.text.len() > MAP_NAME_LEN {
                return Err(bad("pattern", format!("map name pattern `{}` is malformed", p.text)));
            }
        }
        Ok(())
    }

    /// Turn path keys into kernel keys. Paths the resolver does not know (an exe not installed, a cgroup not
    /// created yet) are returned in `unresolved`: their rules cannot match until the daemon resolves again.
    pub fn resolve(&self, r: &dyn Resolver) -> Resolved {
        let mut t = KernelTables {
            header: self.header,
            rules: self.rules.clone(),
            exe: BTreeMap::new(),
            cgroup: BTreeMap::new(),
            uid: self.uid_keys.iter().map(|k| (k.uid, k.rules)).collect(),
            targets: self.targets.clone(),
            map_names: self.map_names.clone(),
            helper_classes: self.helper_classes.clone(),
        };
        let mut unresolved = Vec::new();
        for k in &self.exe_keys {
            match r.exe(&k.path) {
                // Two paths to one inode (hard links) select the rules of both.
                Some(key) => *t.exe.entry(key).or_default() |= k.rules,
                None => unresolved.push(k.path.clone()),
            }
        }
        for k in &self.cgroup_keys {
            match r.cgroup(&k.path) {
                Some(id) => *t.cgroup.entry(id).or_default() |= k.rules,
                None => unresolved.push(k.path.clone()),
            }
        }
        Resolved { tables: t, unresolved }
    }
}

/// Host-specific lookups the daemon supplies.
pub trait Resolver {
    /// The executable's identity: device (kernel `s_dev` encoding) and inode number.
    fn exe(&self, path: &str) -> Option<ExeKey>;
    /// The cgroup v2 id (inode number of the cgroup directory) of a path from the cgroup root.
    fn cgroup(&self, path: &str) -> Option<u64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
/// An executable's identity on the host, as the gate compares it.
pub struct ExeKey {
    /// Device number (kernel `s_dev` encoding).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl ExeKey {
    /// The key's bytes in the gate's map.
    pub fn to_le_bytes(self) -> [u8; EXE_KEY_SIZE] {
        let mut b = [0u8; EXE_KEY_SIZE];
        b[..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..].copy_from_slice(&self.ino.to_le_bytes());
        b
    }
}

/// What the daemon loads into the gate's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTables {
    /// Shape and defaults.
    pub header: Header,
    /// Rules by rule id.
    pub rules: Vec<RuleRecord>,
    /// Rules selected by executable.
    pub exe: BTreeMap<ExeKey, u64>,
    /// Rules selected by cgroup id.
    pub cgroup: BTreeMap<u64, u64>,
    /// Rules selected by uid.
    pub uid: BTreeMap<u32, u64>,
    /// Attach target patterns.
    pub targets: Vec<PatternRecord>,
    /// Map name patterns.
    pub map_names: Vec<PatternRecord>,
    /// Class bits by helper id.
    pub helper_classes: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A policy resolved on the host: the tables, and the subject paths that do not exist here.
pub struct Resolved {
    /// What the daemon loads.
    pub tables: KernelTables,
    /// Executable and cgroup paths that could not be resolved (their rules cannot match).
    pub unresolved: Vec<String>,
}

/// The loading task as the gate sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSubject {
    /// The executable's identity, when known.
    pub exe: Option<ExeKey>,
    /// Ids of the task's cgroup and all its ancestors (order does not matter).
    pub cgroup_ancestors: Vec<u64>,
    /// The task's uid, when known.
    pub uid: Option<u32>,
}

impl KernelSubject {
    /// Resolve a library [`Subject`] the way the gate would see it.
    pub fn resolve(s: &Subject, r: &dyn Resolver) -> KernelSubject {
        let exe = s.exe.as_deref().and_then(|p| r.exe(&normalize_path(p)));
        let mut cgroup_ancestors = Vec::new();
        if let Some(cg) = s.cgroup.as_deref() {
            let norm = normalize_path(cg);
            let mut path = String::new();
            if let Some(id) = r.cgroup("/") {
                cgroup_ancestors.push(id);
            }
            for part in norm.split('/').filter(|c| !c.is_empty()) {
                path.push('/');
                path.push_str(part);
                if let Some(id) = r.cgroup(&path) {
                    cgroup_ancestors.push(id);
                }
            }
        }
        KernelSubject { exe, cgroup_ancestors, uid: s.uid }
    }
}

/// A written map as the gate sees it: its kernel name and who created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelMap {
    /// At most 15 bytes, as `bpf_map->name`.
    pub name: String,
    /// The loading subject created it.
    pub own: bool,
    /// It is pinned in bpffs.
    pub pinned: bool,
}

/// The program being loaded as the gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelProgram {
    /// Program type number.
    pub prog_type: u32,
    /// `None` when the program type takes no expected attach type.
    pub attach_type: Option<u32>,
    /// Attach target, where the kernel names it at load.
    pub attach_target: Option<String>,
    /// Instructions.
    pub insn_cnt: u32,
    /// [`ClassSet`](crate::ClassSet) bits the gate computed from the instructions.
    pub classes: u32,
    /// Maps the program writes.
    pub written_maps: Vec<KernelMap>,
    /// Map writes the gate cannot tie to a map.
    pub unattributed_map_write: bool,
}

impl KernelProgram {
    /// `p` in the gate's record form, as given: its classes, attach target and written maps, with ownership and
    /// pinning from `maps`. It judges nothing; for what the gate itself computes, encode
    /// [`kernel_view::judged`](crate::kernel_view::judged)`(p, maps)`, the one conversion to the gate's view.
    pub fn from_metadata(p: &ProgramMetadata, maps: &[MapDef]) -> KernelProgram {
        let (written, unattributed_map_write) = written_maps(p);
        let classes = p.class_set();
        KernelProgram {
            prog_type: p.prog_type.number(),
            attach_type: p.attach_type.map(super::super::progtype::AttachType::number),
            attach_target: p.attach_target.clone(),
            insn_cnt: p.insn_count,
            classes: classes.0,
            unattributed_map_write,
            written_maps: written
                .into_iter()
                .map(|n| {
                    let f = MapFacts::of(n, maps);
                    KernelMap { name: kernel_map_name(n).to_owned(), own: f.own, pinned: f.pinned }
                })
                .collect(),
        }
    }
}

/// What the gate decides: the decision, the rule id (`None` for the default), and the reasons as
/// [`super::eval::reason_bits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledVerdict {
    /// The decision.
    pub decision: Decision,
    /// The rule that decided; `None` for the default.
    pub rule: Option<u32>,
    /// Reason bits ([`super::reason_bits`]).
    pub reasons: u32,
}

fn pattern_matches(p: &PatternRecord, name: &str) -> bool {
    match p.kind {
        PATTERN_EXACT => p.text == name,
        PATTERN_PREFIX => name.as_bytes().starts_with(p.text.as_bytes()),
        _ => false,
    }
}

fn slice(table: &[PatternRecord], first: u16, count: u16) -> &[PatternRecord] {
    let start = usize::from(first);
    table.get(start..start + usize::from(count)).unwrap_or(&[])
}

fn traced(prog_type: u32) -> bool {
    TRACED_TYPES.iter().any(|t| t.number() == prog_type)
}

/// The gate's decision for `prog` loaded by `subject`. Bounded loops and table lookups only, as in BPF.
pub fn evaluate(t: &KernelTables, subject: &KernelSubject, prog: &KernelProgram) -> CompiledVerdict {
    use reason_bits::*;
    let h = &t.header;
    let valid = if usize::from(h.rule_count) >= MAX_RULES { u64::MAX } else { (1u64 << h.rule_count) - 1 };
    let exe = subject.exe.and_then(|k| t.exe.get(&k)).copied().unwrap_or(0) | h.exe_any;
    let cg = subject.cgroup_ancestors.iter().fold(0, |m, id| m | t.cgroup.get(id).copied().unwrap_or(0)) | h.cgroup_any;
    let uid = subject.uid.and_then(|u| t.uid.get(&u)).copied().unwrap_or(0) | h.uid_any;
    let candidates = exe & cg & uid & valid;
    let audit_mode = h.mode == MODE_AUDIT;
    let finish = |decision: Decision, rule: Option<u32>, reasons: u32| {
        let decision = if audit_mode && decision == Decision::Deny { Decision::Audit } else { decision };
        CompiledVerdict { decision, rule, reasons }
    };
    let gate_hook = gate_hook(prog.prog_type, prog.attach_type, prog.attach_target.as_deref());
    if candidates == 0 {
        return match Action::from_number(h.default_action) {
            _ if gate_hook => finish(Decision::Deny, None, NO_RULE | ATTACH_TARGET),
            Some(Action::Allow) => finish(Decision::Allow, None, 0),
            Some(Action::Audit) => finish(Decision::Audit, None, NO_RULE),
            _ => finish(Decision::Deny, None, NO_RULE),
        };
    }
    let id = candidates.trailing_zeros();
    let Some(r) = t.rules.get(id as usize) else {
        return finish(Decision::Deny, Some(id), RULE_DENIES);
    };
    let action = Action::from_number(r.action).unwrap_or(Action::Deny);
    if action == Action::Deny {
        return finish(Decision::Deny, Some(id), RULE_DENIES);
    }
    let mut reasons = 0u32;
    // A feature probe (schema::Probes) skips the type, attach and size checks.
    let probe = r.probe_insns != 0
        && prog.insn_cnt <= r.probe_insns
        && r.probe_types & bit_of(prog.prog_type) != 0
        && prog.classes & !crate::Capability::MapWrite.bit() == 0
        && !gate_hook;
    if !probe {
        if r.flags & rule_flags::PROG_TYPES != 0 && r.prog_types & bit_of(prog.prog_type) == 0 {
            reasons |= PROG_TYPE;
        }
        if let Some(at) = prog.attach_type {
            if r.flags & rule_flags::ATTACH_TYPES != 0 && r.attach_types & bit_of(at) == 0 {
                reasons |= ATTACH_TYPE;
            }
        }
        if r.flags & rule_flags::ATTACH_TARGETS != 0 {
            let ok = match &prog.attach_target {
                Some(target) => {
                    slice(&t.targets, r.target_first, r.target_count).iter().any(|p| pattern_matches(p, target))
                }
                None => !traced(prog.prog_type),
            };
            if !ok {
                reasons |= ATTACH_TARGET;
            }
        } else if gate_hook {
            reasons |= ATTACH_TARGET;
        }
        if prog.insn_cnt > r.max_insns {
            reasons |= INSNS;
        }
    }
    if prog.classes & r.denied_classes != 0 || prog.classes & !r.allowed_classes != 0 {
        reasons |= CLASS;
    }
    let pinned_ok = r.flags & rule_flags::PINNED_OK != 0;
    let named = slice(&t.map_names, r.map_first, r.map_count);
    for m in &prog.written_maps {
        if named.iter().any(|p| pattern_matches(p, &m.name)) {
            continue;
        }
        let ok = match r.map_write {
            0 => pinned_ok || !m.pinned,
            1 => m.own && (pinned_ok || !m.pinned),
            _ => false,
        };
        if !ok {
            reasons |= MAP;
        }
    }
    if prog.unattributed_map_write && (r.map_write != 0 || !pinned_ok) {
        reasons |= MAP;
    }
    let decision = match (action, reasons) {
        (Action::Audit, _) => Decision::Audit,
        (_, 0) => Decision::Allow,
        _ => Decision::Deny,
    };
    finish(decision, Some(id), reasons)
}

// Fixed-size little-endian encodings: what the daemon writes into the gate's maps. `to_le_bytes` comes with the
// records (gate_abi).

fn need(buf: &[u8], n: usize, record: &'static str) -> Result<(), CompiledError> {
    if buf.len() == n {
        Ok(())
    } else {
        Err(CompiledError::Invalid { file: String::new(), record, what: format!("{} bytes, expected {n}", buf.len()) })
    }
}

impl Header {
    /// Reads a header from the gate's map bytes.
    pub fn from_le_bytes(b: &[u8]) -> Result<Header, CompiledError> {
        need(b, HEADER_SIZE, "header")?;
        Ok(Header { reserved: 0, ..Header::decode_le(b) })
    }
}

impl RuleRecord {
    /// Reads a rule record from the gate's map bytes.
    pub fn from_le_bytes(b: &[u8]) -> Result<RuleRecord, CompiledError> {
        need(b, RULE_RECORD_SIZE, "rule")?;
        Ok(RuleRecord { reserved: 0, ..RuleRecord::decode_le(b) })
    }
}

impl PatternRecord {
    /// The record of the attach-target table ([`TargetPattern`]).
    pub fn target_record(&self) -> TargetPattern {
        TargetPattern::decode_le(&self.to_le_bytes::<TARGET_PATTERN_LEN>())
    }

    /// The record of the map-name table ([`MapPattern`]).
    pub fn map_record(&self) -> MapPattern {
        MapPattern::decode_le(&self.to_le_bytes::<{ MAP_NAME_LEN + 1 }>())
    }

    /// `kind u8, len u8, 2 reserved, name[N]` (NUL-padded): [`TargetPattern`] for `N` 64, [`MapPattern`] for 16.
    pub fn to_le_bytes<const N: usize>(&self) -> Vec<u8> {
        let text = self.text.as_bytes();
        let len = text.len().min(N);
        let mut out = vec![self.kind, len as u8, 0, 0];
        out.extend_from_slice(text.get(..len).unwrap_or_default());
        out.resize(4 + N, 0);
        out
    }
    /// Reads a pattern record of `N` text bytes from the gate's map bytes.
    pub fn from_le_bytes<const N: usize>(b: &[u8]) -> Result<PatternRecord, CompiledError> {
        need(b, 4 + N, "pattern")?;
        let kind = b.first().copied().unwrap_or(0);
        let len = usize::from(b.get(1).copied().unwrap_or(0)).min(N);
        let name = b.get(4..4 + len).unwrap_or_default();
        let text = String::from_utf8(name.to_vec()).map_err(|_| CompiledError::Invalid {
            file: String::new(),
            record: "pattern",
            what: "name is not UTF-8".into(),
        })?;
        Ok(PatternRecord { kind, text })
    }
}
