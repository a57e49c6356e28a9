//! Decisions as the gate reports them on its ring buffer ([`RawEvent`], `struct gate_event`: both from
//! `bpfgate::gate_abi`), and their readable forms: one line of text, or one JSON object.

use std::collections::HashMap;
use std::fmt;

use bpfgate::metadata::{AttachType, Capability, ProgType};
use bpfgate::policy::reason_bits;
use serde::Serialize;

pub use bpfgate::gate_abi::{
    evidence, flags, scan_flags, RawEvent, CLASS_SLOTS, COMM_LEN, NAME_LEN, OP_LINK_OPEN, OP_MAP_CREATE, OP_MAP_OPEN,
    OP_PROG_LOAD, OP_PROG_MAPS, OP_PROG_OPEN, RULE_DEFAULT, TARGET_LEN, VERDICT_ALLOW, VERDICT_AUDIT, VERDICT_DENY,
};

/// The readable name of an operation.
pub fn op_name(op: u32) -> &'static str {
    match op {
        OP_PROG_LOAD => "load",
        OP_PROG_MAPS => "load_maps",
        OP_MAP_CREATE => "map_create",
        OP_MAP_OPEN => "map_open",
        OP_PROG_OPEN => "prog_open",
        OP_LINK_OPEN => "link_open",
        _ => "unknown",
    }
}

/// Why an event record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gate event of {0} bytes, expected {size}", size = RawEvent::SIZE)]
pub struct EventSizeError(pub usize);

/// Reads a ring buffer record (`struct gate_event`, in the host's byte order). One copy, not
/// `RawEvent::decode_ne`'s field by field: the ring buffer's consumer must keep up with every load on the
/// machine (libbpf's consume returns only once it has caught up), in debug builds and under emulation too.
pub fn parse(bytes: &[u8]) -> Result<RawEvent, EventSizeError> {
    if bytes.len() < RawEvent::SIZE {
        return Err(EventSizeError(bytes.len()));
    }
    // SAFETY: RawEvent is repr(C) plain old data (integers and byte arrays, every bit pattern valid) and
    // `bytes` holds at least size_of::<RawEvent>() bytes; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
}

pub(crate) fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// Where a class was found: a helper, a kfunc, or an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    Helper {
        id: u32,
        name: String,
    },
    /// A catalogued kfunc, of vmlinux or a module.
    Kfunc {
        name: String,
    },
    /// A kfunc the catalogue does not have (or whose module BTF the gate has not mapped), by its BTF id.
    UnknownKfunc {
        btf_id: u32,
    },
    Insn {
        index: u32,
    },
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Helper { id, name } => write!(f, "helper {id} {name}"),
            Evidence::Kfunc { name } => write!(f, "kfunc {name}"),
            Evidence::UnknownKfunc { btf_id } => write!(f, "kfunc with btf id {btf_id} (not catalogued)"),
            Evidence::Insn { index } => write!(f, "insn {index}"),
        }
    }
}

/// One class the gate found, and what proved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassFound {
    pub class: Capability,
    /// False for the conservative classes (see `gate.bpf.c`): the program might use it.
    pub proved: bool,
    pub evidence: Option<Evidence>,
}

/// A decision in readable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Nanoseconds since boot (CLOCK_BOOTTIME).
    pub ts_ns: u64,
    /// load, load_maps (the map rules, after verification), map_create, map_open, prog_open, link_open.
    pub op: &'static str,
    /// The map, program or link id the operation is about (None before the kernel assigned one).
    pub object_id: Option<u32>,
    /// load_maps: the first map a rule refused.
    pub map: Option<String>,
    /// map_open: the fd is writable.
    pub write: bool,
    /// map_open: the map was reached through a pin.
    pub pinned: bool,
    /// The object is one of the gate's own (self-protection decided).
    pub gate_object: bool,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub comm: String,
    /// `/proc/TGID/exe` when the daemon could read it, else None.
    pub exe: Option<String>,
    pub exe_dev: u64,
    pub exe_ino: u64,
    pub cgroup_id: u64,
    pub prog_type: String,
    /// None when the program has no expected attach type (0 outside cgroup_skb), as the gate judges it.
    pub attach_type: Option<String>,
    pub attach_target: Option<String>,
    pub name: String,
    pub insn_cnt: u32,
    pub classes: Vec<ClassFound>,
    /// Bits: proved classes.
    pub class_bits: u32,
    /// Bits: conservative classes.
    pub maybe_class_bits: u32,
    pub generation: u64,
    /// None when the policy default decided.
    pub rule: Option<u32>,
    pub rule_name: Option<String>,
    pub reasons: Vec<&'static str>,
    pub verdict: &'static str,
    /// The load was refused with EPERM.
    pub enforced: bool,
    pub audit_mode: bool,
    pub no_policy: bool,
    pub from_kernel: bool,
    pub truncated: bool,
    pub contended: bool,
    pub kfunc_btf_changed: bool,
    pub kptr_read: bool,
    /// The program has helper calls its kernel cannot execute (libbpf's poison, ids past the kernel's last
    /// helper); they granted nothing (`bpfgate::target`).
    pub not_executable_calls: bool,
    /// The load was decided at another task's open of the program by id, before its loader's own fd (the
    /// event's process is still the loader).
    pub decided_at_other_open: bool,
    /// A module kfunc call's fd_array slot was on a page the gate could not read: the call was judged by the
    /// one module with that kfunc, and checked after verification.
    pub fd_array_unread: bool,
}

/// Names for what the raw event only has numbers for.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Rule names by rule id, per policy generation.
    pub rules: HashMap<u64, Vec<String>>,
}

fn reason_names(bits: u32) -> Vec<&'static str> {
    use reason_bits::*;
    [
        (NO_RULE, "no_rule_matched"),
        (RULE_DENIES, "rule_denies"),
        (PROG_TYPE, "prog_type"),
        (ATTACH_TYPE, "attach_type"),
        (ATTACH_TARGET, "attach_target"),
        (INSNS, "max_insns"),
        (CLASS, "capabilities"),
        (MAP, "maps"),
        (GATE_OBJECT, "gate_object"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

impl Event {
    pub fn from_raw(raw: &RawEvent, names: &Names) -> Event {
        let class_at = |slot: usize| Capability::ALL.get(slot).copied();
        let evidence_of = |slot: usize| -> Option<Evidence> {
            let e = raw.evidence.get(slot).copied().unwrap_or(0);
            let value = e & evidence::VALUE_MASK;
            match e & evidence::KIND_MASK {
                evidence::HELPER => {
                    // The word keeps 30 bits of the id; an uncatalogued one (unknown's) is whole beside it.
                    let id = if class_at(slot) == Some(Capability::Unknown) { raw.unknown_helper } else { value };
                    Some(Evidence::Helper {
                        id,
                        name: bpfgate::helpers::helper(id).map_or("unknown", |h| h.name).to_owned(),
                    })
                }
                evidence::KFUNC if value & evidence::CATALOGUED != 0 => {
                    let index = (value & !evidence::CATALOGUED) as usize;
                    Some(match bpfgate::helpers::KFUNCS.get(index) {
                        Some(k) => Evidence::Kfunc { name: k.name.to_owned() },
                        None => Evidence::UnknownKfunc { btf_id: 0 },
                    })
                }
                evidence::KFUNC => Some(Evidence::UnknownKfunc { btf_id: value }),
                evidence::INSN => Some(Evidence::Insn { index: value }),
                _ => None,
            }
        };
        let mut classes = Vec::new();
        for (slot, class) in Capability::ALL.into_iter().enumerate() {
            let proved = raw.classes & class.bit() != 0;
            if proved || raw.maybe_classes & class.bit() != 0 {
                classes.push(ClassFound { class, proved, evidence: evidence_of(slot) });
            }
        }
        let rule = (raw.rule != RULE_DEFAULT).then_some(raw.rule);
        let rule_name = rule.and_then(|r| names.rules.get(&raw.generation).and_then(|v| v.get(r as usize)).cloned());
        let prog_type = ProgType::from_number(raw.prog_type)
            .map_or_else(|| format!("type_{}", raw.prog_type), |t| t.name().to_owned());
        // The gate's rule: attach type 0 (cgroup_inet_ingress) only means something for cgroup_skb (8).
        let attach_type = (raw.attach_type != 0 || raw.prog_type == 8).then(|| {
            AttachType::from_number(raw.attach_type)
                .map_or_else(|| format!("attach_{}", raw.attach_type), |t| t.name().to_owned())
        });
        let exe = std::fs::read_link(format!("/proc/{}/exe", raw.tgid)).ok().map(|p| p.display().to_string());
        Event {
            ts_ns: raw.ts_ns,
            op: op_name(raw.op),
            object_id: (raw.object_id != 0).then_some(raw.object_id),
            map: (raw.map_name[0] != 0).then(|| c_str(&raw.map_name)),
            write: raw.fmode & 2 != 0,
            pinned: raw.flags & flags::PINNED != 0,
            gate_object: raw.flags & flags::GATE_OBJECT != 0,
            pid: raw.pid,
            tgid: raw.tgid,
            uid: raw.uid,
            comm: c_str(&raw.comm),
            exe,
            exe_dev: raw.exe_dev,
            exe_ino: raw.exe_ino,
            cgroup_id: raw.cgroup_id,
            prog_type,
            attach_type,
            attach_target: (raw.flags & flags::TARGET != 0).then(|| c_str(&raw.target)),
            name: c_str(&raw.name),
            insn_cnt: raw.insn_cnt,
            classes,
            class_bits: raw.classes,
            maybe_class_bits: raw.maybe_classes,
            generation: raw.generation,
            rule,
            rule_name,
            reasons: reason_names(raw.reasons),
            verdict: match raw.verdict {
                VERDICT_ALLOW => "allow",
                VERDICT_DENY => "deny",
                VERDICT_AUDIT => "audit",
                _ => "unknown",
            },
            enforced: raw.flags & flags::ENFORCED != 0,
            audit_mode: raw.flags & flags::AUDIT_MODE != 0,
            no_policy: raw.flags & flags::NO_POLICY != 0,
            from_kernel: raw.flags & flags::KERNEL != 0,
            truncated: raw.flags & flags::TRUNCATED != 0,
            contended: raw.scan_flags & scan_flags::CONTENDED != 0,
            kfunc_btf_changed: raw.scan_flags & scan_flags::KFUNC_BTF_CHANGED != 0,
            kptr_read: raw.scan_flags & scan_flags::KPTR_READ != 0,
            not_executable_calls: raw.scan_flags & scan_flags::NOT_EXECUTABLE != 0,
            decided_at_other_open: raw.scan_flags & scan_flags::OTHER_TASK != 0,
            fd_array_unread: raw.scan_flags & scan_flags::FD_ARRAY_UNREAD != 0,
        }
    }

    /// The action word of the text form.
    pub fn action(&self) -> &'static str {
        match self.verdict {
            "allow" => "BPFAllowed",
            "deny" => "BPFDenied",
            "audit" => "BPFAudited",
            _ => "BPFUnknown",
        }
    }
}

/// `process: eve pid: 284 uid: 0 exe: /usr/bin/eve op: load type: xdp name: from-netdev insns: 6 classes:
/// send_signal(helper 109 send_signal) rule: 2 (name) action: BPFDenied reasons: capabilities`
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process: {} pid: {} uid: {}", self.comm, self.tgid, self.uid)?;
        match &self.exe {
            Some(exe) => write!(f, " exe: {exe}")?,
            None => write!(f, " exe: dev {:#x} ino {}", self.exe_dev, self.exe_ino)?,
        }
        write!(f, " cgroup: {} op: {}", self.cgroup_id, self.op)?;
        let program_facts = self.op == "prog_open" && !self.gate_object;
        if matches!(self.op, "map_create" | "map_open" | "prog_open" | "link_open") && !program_facts {
            // Object operations: no program facts.
            if let Some(id) = self.object_id {
                write!(f, " id: {id}")?;
            }
            if !self.name.is_empty() {
                write!(f, " name: {}", self.name)?;
            }
            if self.op == "map_open" {
                f.write_str(if self.write { " mode: rw" } else { " mode: r" })?;
            }
            if self.pinned {
                f.write_str(" pinned")?;
            }
            if self.gate_object {
                f.write_str(" (the gate's own)")?;
            }
            return self.fmt_decision(f);
        }
        if let (true, Some(id)) = (program_facts, self.object_id) {
            // Another subject's program, judged as if this subject loaded it.
            write!(f, " id: {id}")?;
        }
        write!(f, " type: {}", self.prog_type)?;
        if let Some(a) = &self.attach_type {
            write!(f, " attach: {a}")?;
        }
        if let Some(t) = &self.attach_target {
            write!(f, " target: {t}")?;
        }
        write!(f, " name: {} insns: {} classes: ", if self.name.is_empty() { "-" } else { &self.name }, self.insn_cnt)?;
        if self.classes.is_empty() {
            f.write_str("none")?;
        }
        for (i, c) in self.classes.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let maybe = if c.proved { "" } else { "?" };
            match &c.evidence {
                Some(e) => write!(f, "{sep}{}{maybe}({e})", c.class)?,
                None => write!(f, "{sep}{}{maybe}", c.class)?,
            }
        }
        if let Some(m) = &self.map {
            write!(f, " map: {m}")?;
        }
        self.fmt_decision(f)
    }
}

impl Event {
    fn fmt_decision(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rule, &self.rule_name) {
            (Some(r), Some(n)) => write!(f, " rule: {r} ({n})")?,
            (Some(r), None) => write!(f, " rule: {r}")?,
            (None, _) if self.no_policy => f.write_str(" rule: none (no policy)")?,
            (None, _) => f.write_str(" rule: default")?,
        }
        write!(f, " action: {}", self.action())?;
        if !self.reasons.is_empty() {
            write!(f, " reasons: {}", self.reasons.join(","))?;
        }
        if self.audit_mode {
            f.write_str(" (audit mode)")?;
        }
        if self.truncated {
            f.write_str(" (scan truncated)")?;
        }
        if self.contended {
            f.write_str(" (scan contended)")?;
        }
        if self.kfunc_btf_changed {
            f.write_str(" (fd_array changed during the load)")?;
        }
        if self.kptr_read {
            f.write_str(" (kernel_read: a used map may hold kptrs)")?;
        }
        if self.not_executable_calls {
            f.write_str(" (calls the kernel cannot execute: no class)")?;
        }
        if self.decided_at_other_open {
            f.write_str(" (decided at another process's open by id)")?;
        }
        if self.fd_array_unread {
            f.write_str(" (fd_array not readable at load: module kfuncs judged by their only module)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..3].copy_from_slice(b"eve");
        let mut name = [0u8; NAME_LEN];
        name[..11].copy_from_slice(b"from_netdev");
        let mut evidence = [0u32; CLASS_SLOTS];
        evidence[3] = evidence::HELPER | 109;
        evidence[0] = evidence::INSN | 5;
        RawEvent {
            ts_ns: 1,
            generation: 7,
            exe_dev: 0x800001,
            exe_ino: 42,
            cgroup_id: 1,
            pid: 284,
            tgid: 284,
            uid: 0,
            op: OP_PROG_LOAD,
            prog_type: 6,
            attach_type: 37,
            attach_btf_id: 0,
            insn_cnt: 6,
            classes: Capability::SendSignal.bit(),
            maybe_classes: Capability::KernelRead.bit(),
            reasons: reason_bits::CLASS,
            rule: 2,
            verdict: VERDICT_DENY,
            flags: flags::ENFORCED,
            scan_flags: 0,
            scanned: 6,
            evidence,
            object_id: 0,
            fmode: 0,
            unknown_helper: 0,
            reserved: 0,
            comm,
            name,
            map_name: [0; NAME_LEN],
            target: [0; TARGET_LEN],
        }
    }

    #[test]
    fn parses_and_formats_a_denial() {
        let r = raw();
        let parsed = parse(&r.to_ne_bytes()).expect("full record");
        assert_eq!(parsed, r);
        assert_eq!(RawEvent::decode_ne(&r.to_ne_bytes()), r);
        let mut names = Names::default();
        names.rules.insert(7, vec!["a".into(), "b".into(), "no-signals".into()]);
        let e = Event::from_raw(&parsed, &names);
        let line = e.to_string();
        assert!(line.starts_with("process: eve pid: 284 uid: 0"), "{line}");
        assert!(line.contains(" op: load type: xdp attach: xdp name: from_netdev insns: 6"), "{line}");
        assert!(line.contains("classes: kernel_read?(insn 5),send_signal(helper 109 send_signal)"), "{line}");
        assert!(line.contains("rule: 2 (no-signals) action: BPFDenied reasons: capabilities"), "{line}");
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["verdict"], "deny");
        assert_eq!(json["classes"][1]["class"], "send_signal");
        assert_eq!(json["classes"][1]["evidence"]["id"], 109);
        assert_eq!(json["contended"], false);
        assert!(!line.contains("contended"), "{line}");
    }

    #[test]
    fn a_contended_scan_is_reported() {
        let r = RawEvent { scan_flags: scan_flags::CONTENDED, ..raw() };
        let e = Event::from_raw(&r, &Names::default());
        assert!(e.contended);
        assert!(e.to_string().ends_with(" (scan contended)"), "{e}");
    }

    #[test]
    fn scan_flags_are_reported_in_text_and_json() {
        let cases = [
            (scan_flags::OTHER_TASK, "decided_at_other_open", " (decided at another process's open by id)"),
            (
                scan_flags::FD_ARRAY_UNREAD,
                "fd_array_unread",
                " (fd_array not readable at load: module kfuncs judged by their only module)",
            ),
        ];
        for (flag, field, text) in cases {
            let e = Event::from_raw(&RawEvent { scan_flags: flag, ..raw() }, &Names::default());
            assert!(e.to_string().ends_with(text), "{e}");
            let json = serde_json::to_value(&e).expect("serializes");
            assert_eq!(json[field], true, "{json}");
            let plain = serde_json::to_value(Event::from_raw(&raw(), &Names::default())).expect("serializes");
            assert_eq!(plain[field], false, "{plain}");
        }
    }

    /// Helper ids of 2^30 and more do not fit the evidence word: `unknown`'s id comes whole from its own field,
    /// and a poison call is flagged, not counted.
    #[test]
    fn large_helper_ids_are_whole() {
        let mut r = raw();
        let slot = Capability::Unknown as usize;
        let id = 2_001_000_005u32;
        r.classes = Capability::Unknown.bit();
        r.maybe_classes = 0;
        r.evidence = [0; CLASS_SLOTS];
        r.evidence[slot] = evidence::HELPER | (id & evidence::VALUE_MASK);
        r.unknown_helper = id;
        r.scan_flags = scan_flags::NOT_EXECUTABLE;
        let e = Event::from_raw(&RawEvent::decode_ne(&r.to_ne_bytes()), &Names::default());
        assert_eq!(e.classes[0].evidence, Some(Evidence::Helper { id, name: "unknown".into() }));
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["classes"][0]["evidence"]["id"], 2_001_000_005u64);
        assert_eq!(json["not_executable_calls"], true);
        assert!(e.to_string().contains("unknown(helper 2001000005 unknown)"), "{e}");
        assert!(e.to_string().ends_with("(calls the kernel cannot execute: no class)"), "{e}");
    }

    #[test]
    fn short_records_are_refused() {
        assert_eq!(parse(&[0u8; 10]).err(), Some(EventSizeError(10)));
    }
}
