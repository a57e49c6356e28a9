//! The in-kernel gate's interface, in one place: the limits, record layouts, rule flags, reason bits and event
//! constants that the gate's BPF programs (`gate-bpf/src/bpf/gate.bpf.c`), its loader (crate `bpfgate-gate`) and
//! the library's model of the gate ([`policy::compiled`](crate::policy::compiled)) share.
//!
//! This module is for `bpfgate-gate`, not a loader API. Its `build.rs` renders [`c_header`] into `gate_abi.h`:
//! the C side of every record and constant here, with `_Static_assert`s that each record's size and each field's
//! offset equal what `size_of` and `offset_of!` give in Rust. So a record change touches this file only: the
//! `record!` and `constants!` invocations below define the Rust items and the lists the C header is generated
//! from.
//!
//! Records are `#[repr(C)]`, fixed-width fields with explicit padding, so both compilers lay them out the same
//! way. The policy records ([`Header`], [`RuleRecord`], [`TargetPattern`], [`MapPattern`]) are written into the
//! gate's maps little-endian (`to_le_bytes`, "The compiled form" in docs/policy.md); map keys and events are in
//! the host's byte order (`to_ne_bytes`, `decode_ne`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A field type a record may hold: its C type and how it is encoded.
pub trait Field: Sized {
    /// The C element type (`__u32`; for arrays, of one element).
    const C_TYPE: &'static str;
    /// `Some(n)` for an array of `n` elements.
    const LEN: Option<usize> = None;
    /// Writes the field at the start of `out` (in the given byte order); a short `out` gets what fits.
    fn put(&self, out: &mut [u8], le: bool);
    /// Reads the field from the start of `b`; bytes past the end of `b` read as zero.
    fn get(b: &[u8], le: bool) -> Self;
}

macro_rules! scalar_field {
    ($($ty:ty => $c:literal),*) => {$(
        impl Field for $ty {
            const C_TYPE: &'static str = $c;
            fn put(&self, out: &mut [u8], le: bool) {
                let bytes = if le { self.to_le_bytes() } else { self.to_ne_bytes() };
                let n = bytes.len().min(out.len());
                out[..n].copy_from_slice(&bytes[..n]);
            }
            fn get(b: &[u8], le: bool) -> Self {
                let mut bytes = [0u8; size_of::<$ty>()];
                let n = bytes.len().min(b.len());
                bytes[..n].copy_from_slice(&b[..n]);
                if le { <$ty>::from_le_bytes(bytes) } else { <$ty>::from_ne_bytes(bytes) }
            }
        }
    )*};
}
scalar_field!(u8 => "__u8", u16 => "__u16", u32 => "__u32", u64 => "__u64");

impl<T: Field, const N: usize> Field for [T; N] {
    const C_TYPE: &'static str = T::C_TYPE;
    const LEN: Option<usize> = Some(N);
    fn put(&self, out: &mut [u8], le: bool) {
        for (i, x) in self.iter().enumerate() {
            if let Some(dst) = out.get_mut(i * size_of::<T>()..) {
                x.put(dst, le);
            }
        }
    }
    fn get(b: &[u8], le: bool) -> Self {
        std::array::from_fn(|i| T::get(b.get(i * size_of::<T>()..).unwrap_or_default(), le))
    }
}

/// One field of a record, as the C header declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CField {
    /// The field's name, the same in Rust and C.
    pub name: &'static str,
    /// Its C element type (`__u32`, `char`, ...).
    pub c_type: &'static str,
    /// The array length, for an array field.
    pub len: Option<usize>,
    /// Its offset in the Rust record, which the header's `_Static_assert`s hold the C struct to.
    pub offset: usize,
    /// Its doc comment, copied into the header.
    pub doc: &'static str,
}

/// A record the gate and its loader share.
pub trait Record {
    /// The C struct's name (`struct gate_event`).
    const C_NAME: &'static str;
    /// The record's doc comment, copied into the header.
    const DOC: &'static str;
    /// The fields in declaration order.
    fn fields() -> Vec<CField>;
    /// The record's size in bytes, which the header's `_Static_assert`s hold the C struct to.
    fn size() -> usize;
}

/// The doc string of one attribute (`#[doc = "..."]`, what `///` becomes), or "" for any other attribute.
macro_rules! doc_of {
    (doc = $d:literal) => {
        $d
    };
    ($($t:tt)*) => {
        ""
    };
}

/// A field's C type: the Rust type's, or the one given after `as` (`char` for text).
macro_rules! c_type {
    ($ty:ty) => {
        <$ty as Field>::C_TYPE
    };
    ($ty:ty, $c:ident) => {
        stringify!($c)
    };
}

/// Defines `#[repr(C)]` records and what the C header is generated from: `pub struct Name as c_name { fields }`,
/// a field `pub name: Type` or, for text, `pub name: [u8; N] as char`. Doc comments go into the C header.
macro_rules! record {
    ($(
        $(#[$($sattr:tt)*])*
        pub struct $name:ident as $c_name:ident {
            $( $(#[$($fattr:tt)*])* pub $field:ident : $ty:ty $(as $cty:ident)? ),* $(,)?
        }
    )*) => {$(
        $(#[$($sattr)*])*
        #[repr(C)]
        pub struct $name {
            $( $(#[$($fattr)*])* pub $field: $ty, )*
        }

        impl $name {
            /// The record's size in bytes (`sizeof(struct ...)` in C).
            pub const SIZE: usize = size_of::<$name>();

            fn encode(&self, le: bool) -> [u8; $name::SIZE] {
                let mut out = [0u8; $name::SIZE];
                $( Field::put(&self.$field, &mut out[std::mem::offset_of!($name, $field)..], le); )*
                out
            }

            fn decode(b: &[u8], le: bool) -> $name {
                $name { $( $field: Field::get(b.get(std::mem::offset_of!($name, $field)..).unwrap_or_default(), le), )* }
            }

            /// The record as the gate's policy maps hold it (little-endian; padding zero).
            pub fn to_le_bytes(&self) -> [u8; $name::SIZE] {
                self.encode(true)
            }

            /// The record in the host's byte order, as map keys and events are.
            pub fn to_ne_bytes(&self) -> [u8; $name::SIZE] {
                self.encode(false)
            }

            /// Reads a record written by [`Self::to_le_bytes`]; bytes missing from a short `b` read as zero.
            pub fn decode_le(b: &[u8]) -> $name {
                $name::decode(b, true)
            }

            /// Reads a record in the host's byte order; bytes missing from a short `b` read as zero.
            pub fn decode_ne(b: &[u8]) -> $name {
                $name::decode(b, false)
            }
        }

        impl Record for $name {
            const C_NAME: &'static str = stringify!($c_name);
            const DOC: &'static str = concat!($(doc_of!($($sattr)*), "\n",)*);
            fn fields() -> Vec<CField> {
                vec![$(CField {
                    name: stringify!($field),
                    c_type: c_type!($ty $(, $cty)?),
                    len: <$ty as Field>::LEN,
                    offset: std::mem::offset_of!($name, $field),
                    doc: concat!($(doc_of!($($fattr)*), " ",)*),
                }),*]
            }
            fn size() -> usize {
                $name::SIZE
            }
        }
    )*};
}

/// A named constant for the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CConst {
    /// The C name (prefix and Rust name).
    pub name: &'static str,
    /// Its value.
    pub value: u64,
    /// Of a group of bits and masks: printed unsigned, a single bit as `(1U << n)` (other numbers are plain ints).
    pub bit: bool,
    /// Its doc comment, copied into the header.
    pub doc: &'static str,
}

/// Defines constants and their list for the C header: `constants! { LIST, "C_PREFIX", bits|values; consts }`.
/// The C name is the prefix and the Rust name (`flags::KERNEL` is `GATE_F_KERNEL`).
macro_rules! constants {
    ($list:ident, $prefix:literal, $kind:ident; $( $(#[$($attr:tt)*])* pub const $name:ident : $ty:ty = $value:expr; )*) => {
        $( $(#[$($attr)*])* pub const $name: $ty = $value; )*

        /// This group's constants, for the C header.
        pub const $list: &[CConst] = &[$(CConst {
            name: concat!($prefix, stringify!($name)),
            value: $name as u64,
            bit: constants!(@bit $kind),
            doc: concat!($(doc_of!($($attr)*), " ",)*),
        }),*];
    };
    (@bit bits) => { true };
    (@bit values) => { false };
}

constants! { ENUMS, "GATE_", values;
    /// `Action::Allow.number()`.
    pub const ACTION_ALLOW: u8 = 0;
    /// `Action::Deny.number()`.
    pub const ACTION_DENY: u8 = 1;
    /// `Action::Audit.number()`.
    pub const ACTION_AUDIT: u8 = 2;
    /// `MapWrite::Any.number()`: any map.
    pub const MAP_WRITE_ANY: u8 = 0;
    /// `MapWrite::Own.number()`: the subject's own maps.
    pub const MAP_WRITE_OWN: u8 = 1;
    /// `MapWrite::None.number()`: no map.
    pub const MAP_WRITE_NONE: u8 = 2;
}

constants! { LIMITS, "GATE_", values;
    /// Two policy slots: the daemon fills the one not in use, then flips `gate_active_slot`.
    pub const SLOTS: usize = 2;
    /// Rules are bits of a u64 mask.
    pub const MAX_RULES: usize = 64;
    /// Entries in the attach-target pattern table (per slot).
    pub const MAX_TARGET_PATTERNS: usize = 1024;
    /// Bytes of one attach-target pattern.
    pub const TARGET_PATTERN_LEN: usize = 64;
    /// Entries in the map-name pattern table (per slot).
    pub const MAX_MAP_PATTERNS: usize = 256;
    /// Distinct exe / cgroup / uid keys per slot: at most one per rule, and hard links add a few.
    pub const MAX_SUBJECT_KEYS: usize = 256;
    /// Entries of the kfunc_classes map (catalogued kfuncs of vmlinux and the modules).
    pub const MAX_KFUNCS: usize = 4096;
    /// Entries of the gate_objects map (the gate's own maps, programs and links).
    pub const MAX_PROTECTED: usize = 64;
    /// Room for a target name one byte longer than any pattern, so exact matches cannot be fooled by truncation.
    pub const TARGET_LEN: usize = 80;
    /// A program or map name as the kernel keeps it (BPF_OBJ_NAME_LEN), NUL included.
    pub const NAME_LEN: usize = 16;
    /// A task's comm (TASK_COMM_LEN).
    pub const COMM_LEN: usize = 16;
    /// Evidence words per event: one per class bit.
    pub const CLASS_SLOTS: usize = 16;
    /// `BPFG` read as a little-endian u32: a policy header's magic.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"BPFG");
    /// Version of the policy record layout; bumped whenever a policy record changes.
    pub const FORMAT_VERSION: u32 = 2;
    /// `Header::mode`: enforce.
    pub const MODE_ENFORCE: u8 = 0;
    /// `Header::mode`: audit (never deny).
    pub const MODE_AUDIT: u8 = 1;
    /// Pattern kind: the whole name.
    pub const PATTERN_EXACT: u8 = 0;
    /// Pattern kind: a prefix of the name.
    pub const PATTERN_PREFIX: u8 = 1;
    /// `gate_objects` kind: a map.
    pub const KIND_MAP: u32 = 1;
    /// `gate_objects` kind: a program.
    pub const KIND_PROG: u32 = 2;
    /// `gate_objects` kind: a link.
    pub const KIND_LINK: u32 = 3;
    /// `RawEvent::op`: lsm/bpf_prog_load: classes, type, target.
    pub const OP_PROG_LOAD: u32 = 1;
    /// `RawEvent::op`: lsm/bpf_prog after verification: the maps the program uses.
    pub const OP_PROG_MAPS: u32 = 2;
    /// `RawEvent::op`: lsm/bpf_map_create: the creator becomes the map's owner.
    pub const OP_MAP_CREATE: u32 = 3;
    /// `RawEvent::op`: lsm/bpf_map: a writable fd to another subject's (or the gate's) map.
    pub const OP_MAP_OPEN: u32 = 4;
    /// `RawEvent::op`: lsm/bpf_prog: an fd by id or pin to the gate's or another subject's program.
    pub const OP_PROG_OPEN: u32 = 5;
    /// `RawEvent::op`: lsm/bpf: BPF_LINK_GET_FD_BY_ID of one of the gate's links.
    pub const OP_LINK_OPEN: u32 = 6;
    /// `RawEvent::verdict` (`policy::Decision::number`): allowed.
    pub const VERDICT_ALLOW: u8 = 0;
    /// `RawEvent::verdict`: denied.
    pub const VERDICT_DENY: u8 = 1;
    /// `RawEvent::verdict`: allowed and reported.
    pub const VERDICT_AUDIT: u8 = 2;
    /// `RawEvent::rule` when the policy default decided.
    pub const RULE_DEFAULT: u32 = u32::MAX;
    /// Decision counters: the kinds of decision counted apart (`COUNT_LOADS`, `COUNT_OPENS`).
    pub const COUNT_KINDS: usize = 2;
    /// Decision counter kind: a program load, counted once at its final decision.
    pub const COUNT_LOADS: usize = 0;
    /// Decision counter kind: an fd to another subject's map or program (`OP_MAP_OPEN`, `OP_PROG_OPEN`).
    pub const COUNT_OPENS: usize = 1;
    /// Decision counters: the verdicts counted apart (`VERDICT_ALLOW`, `VERDICT_DENY`, `VERDICT_AUDIT`).
    pub const COUNT_VERDICTS: usize = 3;
    /// Counters of one policy slot: per rule and one more for the default, per kind and verdict.
    pub const COUNTS_PER_SLOT: usize = (MAX_RULES + 1) * COUNT_KINDS * COUNT_VERDICTS;
    /// The counter of refusals of the gate's own objects to other processes (self-protection), after the slots'.
    pub const COUNT_GATE_OBJECT: usize = SLOTS * COUNTS_PER_SLOT;
    /// Entries of the per-CPU `decision_counts` array ([`counter_index`]).
    pub const COUNTERS: usize = COUNT_GATE_OBJECT + 1;
}

/// The `decision_counts` entry of a decision by `rule` (`MAX_RULES` for the policy default) of the policy in
/// `slot` (its generation's parity), of `kind` (`COUNT_LOADS`, `COUNT_OPENS`) and `verdict` (`VERDICT_*`):
/// `gate_count_decision` in the gate's events.bpf.h computes the same.
pub const fn counter_index(slot: usize, rule: usize, kind: usize, verdict: usize) -> usize {
    ((slot * (MAX_RULES + 1) + rule) * COUNT_KINDS + kind) * COUNT_VERDICTS + verdict
}

/// `RuleRecord::flags` bits.
pub mod rule_flags {
    use super::CConst;
    constants! { C, "GATE_RULE_", bits;
        /// `prog_types` given: the `prog_types` mask applies.
        pub const PROG_TYPES: u8 = 1 << 0;
        /// `attach_types` given: the `attach_types` mask applies to programs with an expected attach type.
        pub const ATTACH_TYPES: u8 = 1 << 1;
        /// `attach_targets` given: the target slice applies.
        pub const ATTACH_TARGETS: u8 = 1 << 2;
        /// `maps.pinned: allow`.
        pub const PINNED_OK: u8 = 1 << 3;
    }
}

/// Bits of the reason mask: the compiled evaluator's (shared with the library's reasons) and the gate's own.
pub mod reason_bits {
    use super::CConst;
    constants! { C, "GATE_R_", bits;
        /// No rule matches the subject; the default decided.
        pub const NO_RULE: u32 = 1 << 0;
        /// The matching rule's action is `deny`.
        pub const RULE_DENIES: u32 = 1 << 1;
        /// The program type is not in the rule's `prog_types`.
        pub const PROG_TYPE: u32 = 1 << 2;
        /// The expected attach type is not in the rule's `attach_types`.
        pub const ATTACH_TYPE: u32 = 1 << 3;
        /// The attach target matches none of the rule's `attach_targets` (or is unknown at load, or is a gate hook).
        pub const ATTACH_TARGET: u32 = 1 << 4;
        /// More instructions than the rule's `max_insns`.
        pub const INSNS: u32 = 1 << 5;
        /// A class the rule denies, or does not allow.
        pub const CLASS: u32 = 1 << 6;
        /// A map write the rule's map rules refuse (or one that cannot be attributed to a map).
        pub const MAP: u32 = 1 << 7;
        /// The gate's own: a request for one of its objects by anyone but its daemon (self-protection).
        pub const GATE_OBJECT: u32 = 1 << 8;
    }
}

/// `RawEvent::flags`.
pub mod flags {
    use super::CConst;
    constants! { C, "GATE_F_", bits;
        /// bpf_prog_load from the kernel (6.16+ hook argument).
        pub const KERNEL: u8 = 1 << 0;
        /// No valid policy in the active slot: allowed.
        pub const NO_POLICY: u8 = 1 << 1;
        /// The policy is in audit mode.
        pub const AUDIT_MODE: u8 = 1 << 2;
        /// `target` holds the attach target's BTF name.
        pub const TARGET: u8 = 1 << 3;
        /// The load was refused with -EPERM.
        pub const ENFORCED: u8 = 1 << 4;
        /// The scan stopped early (unreadable instructions): classes incomplete.
        pub const TRUNCATED: u8 = 1 << 5;
        /// The object is one of the gate's own (self-protection).
        pub const GATE_OBJECT: u8 = 1 << 6;
        /// Map events: the map is pinned.
        pub const PINNED: u8 = 1 << 7;
    }
}

/// `RawEvent::scan_flags`.
pub mod scan_flags {
    use super::CConst;
    constants! { C, "GATE_SCAN_", bits;
        /// Another load's scan took the jump-target bits: kernel_read, map_write and packet_write were counted
        /// by their preconditions only (`kernel_view` does not model this).
        pub const CONTENDED: u16 = 1 << 0;
        /// The verifier bound other module BTFs than the scan read from fd_array: unknown and the three
        /// conservative classes were added.
        pub const KFUNC_BTF_CHANGED: u16 = 1 << 1;
        /// kernel_read was counted at lsm/bpf_prog: a load through an unknown register, and a map the program
        /// uses may hold kptrs.
        pub const KPTR_READ: u16 = 1 << 2;
        /// The program has helper calls its kernel cannot execute (libbpf's poison, ids past the kernel's last
        /// helper: `bpfgate::target`); they granted nothing.
        pub const NOT_EXECUTABLE: u16 = 1 << 3;
        /// The load's final decision ran in another task's request for an fd to the program (an open by id before
        /// the loader's own fd); pid, tgid and comm are the loader's, recorded at the load.
        pub const OTHER_TASK: u16 = 1 << 4;
        /// A module kfunc call's fd_array slot was on a page the gate could not read (not mapped then): the
        /// call was judged by the one module with a catalogued kfunc at its BTF id (checked at lsm/bpf_prog
        /// against what the verifier bound), or `unknown` where no one module has it.
        pub const FD_ARRAY_UNREAD: u16 = 1 << 5;
    }
}

/// Helper calls no kernel executes: the ids libbpf writes over instructions it knows cannot run on the kernel it
/// loads into (libbpf's `bpf_core_poison_insn`, `poison_map_ldimm64`, `poison_kfunc_call`), each a helper call
/// (`BPF_JMP | BPF_CALL`, src_reg 0) with an id far past any kernel's `__BPF_FUNC_MAX_ID`, which the verifier
/// refuses wherever it is reachable ("invalid func unknown#..."). See [`crate::target`].
pub mod poison {
    use super::CConst;
    constants! { C, "GATE_POISON_", values;
        /// A failed CO-RE relocation (`0xbad2310`, "bad relo").
        pub const CORE_RELO: u32 = 195_896_080;
        /// A reference to a map the loader did not create: this plus the map's index in the object, twice (both
        /// slots of the `ld_imm64` it replaces).
        pub const MAP_BASE: u32 = 2_001_000_000;
        /// A call to a weak kfunc the kernel lacks: this plus the extern's index in the object.
        pub const KFUNC_BASE: u32 = 2_002_000_000;
        /// How many ids past MAP_BASE and KFUNC_BASE are taken as theirs (an index below a million).
        pub const SPAN: u32 = 1_000_000;
    }
}

/// `RawEvent::evidence[class bit]`: what first proved the class, kind in the top two bits. HELPER: helper id
/// (its low 30 bits: an uncatalogued id, which may be larger, is whole in `RawEvent::unknown_helper`);
/// KFUNC: with CATALOGUED its index in the catalogue, else the call's BTF id (of vmlinux or a module); INSN:
/// instruction index (conservative classes, and override_return of BPF_MODIFY_RETURN programs at 0).
pub mod evidence {
    use super::CConst;
    constants! { C, "GATE_EV_", bits;
        /// No evidence (the class is not set).
        pub const NONE: u32 = 0;
        /// The value is a helper id.
        pub const HELPER: u32 = 1 << 30;
        /// The value is a kfunc (see `CATALOGUED`).
        pub const KFUNC: u32 = 2 << 30;
        /// The value is an instruction index.
        pub const INSN: u32 = 3 << 30;
        /// The kind's bits.
        pub const KIND_MASK: u32 = 3 << 30;
        /// The value's bits.
        pub const VALUE_MASK: u32 = !KIND_MASK;
        /// With KFUNC: the value is the kfunc's index in the catalogue, not a BTF id.
        pub const CATALOGUED: u32 = 1 << 29;
    }
}

record! {
    /// One decision, on the events ring buffer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RawEvent as gate_event {
        /// bpf_ktime_get_boot_ns
        pub ts_ns: u64,
        /// policy generation that decided (0: none)
        pub generation: u64,
        /// kernel dev_t encoding (MAJOR << 20 | MINOR)
        pub exe_dev: u64,
        /// inode number of the subject's executable
        pub exe_ino: u64,
        /// cgroup v2 id of the subject
        pub cgroup_id: u64,
        /// thread id
        pub pid: u32,
        /// process id
        pub tgid: u32,
        /// real uid
        pub uid: u32,
        /// GATE_OP_*
        pub op: u32,
        /// BPF_PROG_TYPE_* of the program
        pub prog_type: u32,
        /// expected_attach_type as submitted
        pub attach_type: u32,
        /// BTF id of the attach target (0: none)
        pub attach_btf_id: u32,
        /// instructions of the program as submitted
        pub insn_cnt: u32,
        /// proved by calls: helper, kfunc, tail call, fmod_ret
        pub classes: u32,
        /// conservative: kernel_read, map_write, packet_write (see gate.bpf.c)
        pub maybe_classes: u32,
        /// GATE_R_* (bpfgate::policy::reason_bits)
        pub reasons: u32,
        /// rule id or GATE_RULE_DEFAULT
        pub rule: u32,
        /// GATE_VERDICT_*
        pub verdict: u8,
        /// GATE_F_*
        pub flags: u8,
        /// GATE_SCAN_*
        pub scan_flags: u16,
        /// instructions scanned; less than insn_cnt only with GATE_F_TRUNCATED
        pub scanned: u32,
        /// GATE_EV_* by class bit
        pub evidence: [u32; CLASS_SLOTS],
        /// map, program or link id the operation is about (0: none yet)
        pub object_id: u32,
        /// GATE_OP_MAP_OPEN: the fd's mode (FMODE_READ 1, FMODE_WRITE 2)
        pub fmode: u32,
        /// the whole id of the helper a HELPER evidence word names (that word keeps only its low 30 bits)
        pub unknown_helper: u32,
        /// zero (padding)
        pub reserved: u32,
        /// the loading task's comm
        pub comm: [u8; COMM_LEN] as char,
        /// program name, or map name for map operations
        pub name: [u8; NAME_LEN] as char,
        /// GATE_OP_PROG_MAPS: the first map that broke the rule
        pub map_name: [u8; NAME_LEN] as char,
        /// attach target's BTF name (with GATE_F_TARGET)
        pub target: [u8; TARGET_LEN] as char,
    }

    /// A policy slot's header (policy_header map, by slot).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Header as gate_policy_header {
        /// GATE_MAGIC
        pub magic: u32,
        /// GATE_FORMAT_VERSION
        pub format_version: u32,
        /// Chosen by whoever compiles; the daemon swaps tables atomically by generation.
        pub generation: u64,
        /// GATE_MODE_*
        pub mode: u8,
        /// `Action::number` (GATE_ACTION_*) for subjects no rule matches.
        pub default_action: u8,
        /// Rules in the table.
        pub rule_count: u16,
        /// Zero (padding).
        #[serde(skip)]
        pub reserved: u32,
        /// Rules without an exe constraint.
        pub exe_any: u64,
        /// Rules without a cgroup constraint.
        pub cgroup_any: u64,
        /// Rules without a uid constraint.
        pub uid_any: u64,
    }

    /// One rule, as the gate reads it from an array map indexed by slot * GATE_MAX_RULES + rule id.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RuleRecord as gate_rule {
        /// `Action::number` (GATE_ACTION_*)
        pub action: u8,
        /// `MapWrite::number` (GATE_MAP_WRITE_*)
        pub map_write: u8,
        /// GATE_RULE_* (rule_flags)
        pub flags: u8,
        /// Zero (padding).
        #[serde(skip)]
        pub reserved: u8,
        /// `u32::MAX` when the rule sets no limit.
        pub max_insns: u32,
        /// Classes a program may use (all bits when the rule has no `capabilities.allow`).
        pub allowed_classes: u32,
        /// Classes the rule's `capabilities.deny` refuses.
        pub denied_classes: u32,
        /// Bit `n` = prog type number `n` allowed.
        pub prog_types: u64,
        /// Bit `n` = attach type number `n` allowed.
        pub attach_types: u64,
        /// First attach target pattern of the rule in the slot's pattern table.
        pub target_first: u16,
        /// Attach target patterns of the rule.
        pub target_count: u16,
        /// First map name pattern of the rule in the slot's pattern table.
        pub map_first: u16,
        /// Map name patterns of the rule.
        pub map_count: u16,
        /// `probes.max_insns` (0: no probes): a program of a `probe_types` type with at most this many
        /// instructions and no class but map_write passes the type, attach and size checks.
        pub probe_insns: u32,
        /// Zero (padding).
        #[serde(skip)]
        pub reserved2: u32,
        /// Bit `n` = prog type number `n` may be a probe.
        pub probe_types: u64,
    }

    /// An attach-target pattern (policy_targets map).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TargetPattern as gate_pattern {
        /// GATE_PATTERN_*
        pub kind: u8,
        /// Bytes of text used.
        pub len: u8,
        /// Zero (padding).
        pub reserved: [u8; 2],
        /// NUL-padded
        pub text: [u8; TARGET_PATTERN_LEN] as char,
    }

    /// A maps.named pattern (policy_map_names map): at most 15 bytes, all the kernel keeps of a map name.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct MapPattern as gate_map_pattern {
        /// GATE_PATTERN_*
        pub kind: u8,
        /// Bytes of text used.
        pub len: u8,
        /// Zero (padding).
        pub reserved: [u8; 2],
        /// NUL-padded
        pub text: [u8; NAME_LEN] as char,
    }

    /// policy_exe key; slot is the policy slot (0 or 1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PolicyExeKey as gate_exe_key {
        /// policy slot
        pub slot: u32,
        /// Zero (padding).
        pub reserved: u32,
        /// kernel dev_t encoding
        pub dev: u64,
        /// inode number
        pub ino: u64,
    }

    /// policy_cgroup key.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PolicyCgroupKey as gate_cgroup_key {
        /// policy slot
        pub slot: u64,
        /// cgroup v2 id
        pub id: u64,
    }

    /// policy_uid key.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PolicyUidKey as gate_uid_key {
        /// policy slot
        pub slot: u32,
        /// user id
        pub uid: u32,
    }

    /// kfunc_classes key: a kfunc by where its BTF lives. The value is `bpfgate::kernel_view::kfunc_value`
    /// (GATE_KFUNC_*_SHIFT in gate_scan.h).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KfuncKey as gate_kfunc_key {
        /// 0 for vmlinux (a call with off 0), else the id of the module's BTF object (the kernel's struct btf id,
        /// what BPF_BTF_GET_NEXT_ID lists)
        pub btf_obj: u32,
        /// the call's imm
        pub btf_id: u32,
    }

    /// gate_objects key: one of the gate's own objects (self-protection), filled by its daemon.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ObjectKey as gate_object_key {
        /// GATE_KIND_*
        pub kind: u32,
        /// the object's kernel id
        pub id: u32,
    }
}

// The sizes the documentation states; changing one is a format change (FORMAT_VERSION for the policy records).
const _: () = assert!(RawEvent::SIZE == 304);
const _: () = assert!(Header::SIZE == 48 && RuleRecord::SIZE == 56);
const _: () = assert!(TargetPattern::SIZE == 4 + TARGET_PATTERN_LEN && MapPattern::SIZE == 4 + NAME_LEN);

fn records() -> Vec<(&'static str, &'static str, usize, Vec<CField>)> {
    fn of<R: Record>() -> (&'static str, &'static str, usize, Vec<CField>) {
        (R::C_NAME, R::DOC, R::size(), R::fields())
    }
    vec![
        of::<RawEvent>(),
        of::<Header>(),
        of::<RuleRecord>(),
        of::<TargetPattern>(),
        of::<MapPattern>(),
        of::<PolicyExeKey>(),
        of::<PolicyCgroupKey>(),
        of::<PolicyUidKey>(),
        of::<KfuncKey>(),
        of::<ObjectKey>(),
    ]
}

fn comment(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `gate_abi.h`: the C side of this module (gate-bpf/build.rs writes it into OUT_DIR).
pub fn c_header() -> String {
    let mut out = String::from(
        "/* @generated by gate-bpf/build.rs from bpfgate::gate_abi (lib/src/gate_abi.rs): edit that, not this. */\n",
    );
    out.push_str("#ifndef BPFGATE_GATE_ABI_H\n#define BPFGATE_GATE_ABI_H\n");
    let groups: [(&str, &[CConst]); 8] = [
        ("Limits, kinds, operations and verdicts", LIMITS),
        ("The numbers of policy::Action and policy::MapWrite", ENUMS),
        ("RuleRecord::flags (rule_flags)", rule_flags::C),
        ("Reason bits (reason_bits)", reason_bits::C),
        ("RawEvent::flags (flags)", flags::C),
        ("RawEvent::scan_flags (scan_flags)", scan_flags::C),
        ("RawEvent::evidence (evidence): kind in the top two bits", evidence::C),
        ("Helper ids of libbpf's poisoned instructions (poison)", poison::C),
    ];
    for (title, consts) in groups {
        let _ = writeln!(out, "\n/* {title}. */");
        for c in consts {
            // Bits and masks are unsigned, as are numbers past int; other numbers are plain ints.
            let value = match c.value {
                v if c.bit && v.is_power_of_two() => format!("(1U << {})", v.trailing_zeros()),
                v if v > u64::from(u32::MAX) => format!("{v:#x}ULL"),
                v if c.bit || v > i32::MAX as u64 => format!("{v:#x}U"),
                v if v >= 0x10000 => format!("{v:#x}"),
                v => format!("{v}"),
            };
            let doc = comment(c.doc);
            if doc.is_empty() {
                let _ = writeln!(out, "#define {} {value}", c.name);
            } else {
                let _ = writeln!(out, "#define {} {value} /* {doc} */", c.name);
            }
        }
    }
    for (name, doc, size, fields) in records() {
        let _ = writeln!(out, "\n/* {} ({size} bytes) */\nstruct {name} {{", comment(doc));
        for f in &fields {
            let dims = f.len.map(|n| format!("[{n}]")).unwrap_or_default();
            let doc = comment(f.doc);
            if doc.is_empty() {
                let _ = writeln!(out, "\t{} {}{dims};", f.c_type, f.name);
            } else {
                let _ = writeln!(out, "\t{} {}{dims}; /* {doc} */", f.c_type, f.name);
            }
        }
        out.push_str("};\n");
        let _ = writeln!(out, "_Static_assert(sizeof(struct {name}) == {size}, \"struct {name}: bpfgate::gate_abi\");");
        for f in &fields {
            let _ = writeln!(
                out,
                "_Static_assert(__builtin_offsetof(struct {name}, {}) == {}, \"{name}.{}: bpfgate::gate_abi\");",
                f.name, f.offset, f.name
            );
        }
    }
    out.push_str("\n#endif /* BPFGATE_GATE_ABI_H */\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_encode_every_field_at_its_offset() {
        let h = Header {
            magic: MAGIC,
            format_version: FORMAT_VERSION,
            generation: 0x0102_0304_0506_0708,
            mode: MODE_AUDIT,
            default_action: 2,
            rule_count: 0x0a0b,
            reserved: 0,
            exe_any: 1,
            cgroup_any: 2,
            uid_any: 3,
        };
        let b = h.to_le_bytes();
        assert_eq!(&b[..4], b"BPFG");
        assert_eq!(b[16..20], [1, 2, 0x0b, 0x0a]);
        assert_eq!(b[24], 1);
        assert_eq!(Header::decode_le(&b), h);
        assert_eq!(Header::decode_le(&b[..10]).generation, 0x0708);
        let e = RawEvent::decode_ne(&[0xffu8; RawEvent::SIZE]);
        assert_eq!((e.target[TARGET_LEN - 1], e.evidence[CLASS_SLOTS - 1]), (0xff, u32::MAX));
        assert_eq!(RawEvent::decode_ne(&e.to_ne_bytes()), e);
    }

    #[test]
    fn every_record_field_is_covered_and_the_header_asserts_it() {
        let h = c_header();
        for (name, _, size, fields) in records() {
            let end = fields.iter().map(|f| f.offset).max().unwrap_or(0);
            assert!(end < size, "{name}");
            assert!(h.contains(&format!("_Static_assert(sizeof(struct {name}) == {size},")), "{name}");
            for f in fields {
                assert!(h.contains(&format!("__builtin_offsetof(struct {name}, {}) == {},", f.name, f.offset)));
            }
        }
        assert!(h.contains("#define GATE_MAX_RULES 64 /* Rules are bits of a u64 mask. */"), "{h}");
        assert!(h.contains("#define GATE_EV_KFUNC (1U << 31)"), "{h}");
        assert!(h.contains("#define GATE_F_PINNED (1U << 7)"), "{h}");
        assert!(h.contains("#define GATE_ACTION_AUDIT 2 /* `Action::Audit.number()`. */"), "{h}");
        assert!(h.contains("\tchar comm[16];"), "{h}");
    }
}
