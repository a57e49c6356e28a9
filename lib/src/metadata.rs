//! Capability metadata: what a program can do, as the analysis found it.
//!
//! These types are the product of the library and the wire format of `bpfgate inspect --format json|cbor`.
//! The JSON schema is documented in `docs/schema.md`; [`SCHEMA_VERSION`] changes whenever a field changes meaning
//! or disappears (adding a field does not bump it).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::progtype::{AttachType, ProgType};
use crate::progtype::{MAP_TYPE_ARRAY_OF_MAPS, MAP_TYPE_HASH_OF_MAPS};

/// Version of the metadata schema carried in every [`ObjectReport`].
pub const SCHEMA_VERSION: u32 = 2;

/// A class of things a program can do that a load policy cares about.
///
/// The declaration order is the bit order of [`ClassSet`] and of the in-kernel gate's bitmasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Reads arbitrary kernel memory: `bpf_probe_read_kernel` and friends, or loads through BTF-typed pointers.
    KernelRead,
    /// Reads user memory of the current (or another) task.
    UserRead,
    /// Writes user memory (`bpf_probe_write_user`).
    UserWrite,
    /// Sends a signal to a task.
    SendSignal,
    /// Overrides the return value of a kernel function (`bpf_override_return`, `fmod_ret`).
    OverrideReturn,
    /// Issues bpf() syscalls from BPF (`BPF_PROG_TYPE_SYSCALL` helpers).
    SysBpf,
    /// Writes to a map: by helper, by a store through a map value pointer, or by a helper writing into map memory.
    MapWrite,
    /// Transfers control to another program through a prog array.
    TailCall,
    /// Can take the machine down (`KF_DESTRUCTIVE` kfuncs such as `crash_kexec`).
    Destructive,
    /// Writes to the trace pipe (`bpf_trace_printk`, `bpf_trace_vprintk`).
    TracePrintk,
    /// Modifies packet contents or shape (stores through packet pointers, `bpf_skb_store_bytes`, ...).
    PacketWrite,
    /// Redirects packets or messages to another device, socket or CPU.
    Redirect,
    /// Calls a helper id or kfunc that the catalogue does not know.
    Unknown,
}

impl Capability {
    /// Every class, in bit order.
    pub const ALL: [Capability; 13] = [
        Capability::KernelRead,
        Capability::UserRead,
        Capability::UserWrite,
        Capability::SendSignal,
        Capability::OverrideReturn,
        Capability::SysBpf,
        Capability::MapWrite,
        Capability::TailCall,
        Capability::Destructive,
        Capability::TracePrintk,
        Capability::PacketWrite,
        Capability::Redirect,
        Capability::Unknown,
    ];

    /// The snake_case name used in JSON, policies and the catalogue.
    pub fn name(self) -> &'static str {
        match self {
            Capability::KernelRead => "kernel_read",
            Capability::UserRead => "user_read",
            Capability::UserWrite => "user_write",
            Capability::SendSignal => "send_signal",
            Capability::OverrideReturn => "override_return",
            Capability::SysBpf => "sys_bpf",
            Capability::MapWrite => "map_write",
            Capability::TailCall => "tail_call",
            Capability::Destructive => "destructive",
            Capability::TracePrintk => "trace_printk",
            Capability::PacketWrite => "packet_write",
            Capability::Redirect => "redirect",
            Capability::Unknown => "unknown",
        }
    }

    /// The bit of this class in a [`ClassSet`].
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability name that is not one of [`Capability::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability class `{0}`")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// A set of [`Capability`] classes as a bitmask (bit `c as u32`), the form the in-kernel gate uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassSet(pub u32);

impl ClassSet {
    /// No class.
    pub const EMPTY: ClassSet = ClassSet(0);

    /// Whether `c` is in the set.
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }
    /// Adds `c`.
    pub fn insert(&mut self, c: Capability) {
        self.0 |= c.bit();
    }
    /// Every class in either set.
    pub fn union(self, other: ClassSet) -> ClassSet {
        ClassSet(self.0 | other.0)
    }
    /// Whether the set has no class.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The classes in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Capability> for ClassSet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        let mut s = ClassSet::EMPTY;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// Everything `inspect` learned about one ELF object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectReport {
    /// [`SCHEMA_VERSION`] of the library that wrote the report.
    pub schema_version: u32,
    /// The path as given by the caller.
    pub file: String,
    /// `license` section contents, if any.
    pub license: Option<String>,
    /// Map definitions found in the object (legacy, BTF-defined and global data).
    pub maps: Vec<MapDef>,
    /// One entry per program that could be analyzed, in the object's order.
    pub programs: Vec<ProgramMetadata>,
    /// Problems that stopped the analysis of one program or of the whole object, in the order found.
    pub errors: Vec<InspectError>,
    /// Code of executable sections that no reported program contains or reaches: nothing is dropped silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreached: Vec<UnreachedCode>,
    /// What a reader should know about how loaders read the object: a loader that refuses it, function symbols
    /// that become no program, symbols that alias another, load overrides applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How the loader rewrites the code at load time, and whether this report judged the rewritten code: absent
    /// for an object libbpf loads as compiled (no CO-RE relocations) inspected without a target kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_rewrites: Option<LoadRewrites>,
}

/// A run of instructions of an executable section that no reported program contains or reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnreachedCode {
    /// The executable section.
    pub section: String,
    /// First instruction of the run, in the section.
    pub start: u32,
    /// One past its last instruction.
    pub end: u32,
    /// The function symbol the run starts at, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
}

/// A loader whose rules for finding programs in an object bpfgate follows (`docs/loaders.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loader {
    /// libbpf 1.x (and what is built on it: skeletons, bpftool, iproute2 built with libbpf, libxdp).
    Libbpf,
    /// cilium/ebpf (Go).
    CiliumEbpf,
    /// iproute2's own ELF loader (`tc`/`ip` built without libbpf, `lib/bpf_legacy.c`).
    Iproute2,
    /// aya (Rust, `aya-obj`).
    Aya,
}

impl Loader {
    /// Every loader, in order.
    pub const ALL: [Loader; 4] = [Loader::Libbpf, Loader::CiliumEbpf, Loader::Iproute2, Loader::Aya];

    /// The loader's name as people write it.
    pub fn name(self) -> &'static str {
        match self {
            Loader::Libbpf => "libbpf",
            Loader::CiliumEbpf => "cilium/ebpf",
            Loader::Iproute2 => "iproute2",
            Loader::Aya => "aya",
        }
    }
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name the kernel keeps for a program loaded under `name` (what `bpftool prog` and the gate's events show):
/// its first 15 bytes (`BPF_OBJ_NAME_LEN`, [`crate::gate_abi::NAME_LEN`], less the terminator), as libbpf,
/// cilium/ebpf and aya pass it (cut at a character boundary).
pub fn kernel_name(name: &str) -> String {
    let mut end = name.len().min(crate::gate_abi::NAME_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// libbpf rewrites an object's code for the kernel it loads it on (CO-RE relocations: field offsets and sizes,
/// type and enum checks) and poisons code that cannot work there, which the verifier then has to prove dead:
/// `call 0xbad2310` for a failed relocation, `call 2001000000 + map index` for a map the loader did not create,
/// `call 2002000000 + extern index` for a weak kfunc the kernel lacks. See [`crate::InspectOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRewrites {
    /// CO-RE relocation records in the object (`.BTF.ext`).
    pub core_relocations: u64,
    /// The code was judged as relocated for a target kernel's BTF. When false and `core_relocations` is not 0,
    /// the programs were judged as compiled, and what loads may differ: offsets, and code libbpf poisons.
    pub target_btf: bool,
    /// Maps the loader was said not to create (`bpf_map__set_autocreate(map, false)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_created: Vec<String>,
    /// Instructions replaced by calls that cannot execute, in section order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poisoned: Vec<PoisonedInsn>,
}

/// One instruction the loader replaces by a call that cannot execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonedInsn {
    /// Code section.
    pub section: String,
    /// Instruction offset in the section.
    pub insn: u64,
    /// Why.
    pub reason: PoisonReason,
    /// The relocation (in libbpf's notation), map or kfunc.
    pub what: String,
}

/// Why the loader poisons an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoisonReason {
    /// A CO-RE relocation found no matching field, type or enum value in the kernel (`call 0xbad2310`).
    CoreRelocation,
    /// The `ld_imm64` of a map the loader does not create (`call 2001000000 + map index`).
    MapNotCreated,
    /// A call to a weak kfunc the kernel lacks (`call 2002000000 + extern index`).
    KfuncMissing,
}

/// What kind of problem an [`InspectError`] is: a stable tag for programs, where the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InspectErrorKind {
    /// The file could not be read (reported by callers that read it, such as the CLI).
    Io,
    /// Not an ELF file, or its headers are malformed.
    NotElf,
    /// An ELF file for another machine than BPF.
    NotBpf,
    /// A section's name or data cannot be read, or a code section is not whole instructions.
    Section,
    /// A function symbol is misplaced or its name cannot be read.
    Symbol,
    /// A map definition is malformed.
    Map,
    /// A relocation cannot be resolved; the programs using its section are not analyzed.
    Relocation,
    /// The `.BTF` section is malformed.
    Btf,
    /// A program's code is malformed: an undecodable instruction, a jump or call out of its function, code falling
    /// off its end, a read of an unset register, recursion, a missing exception callback.
    Code,
    /// A limit was exceeded: the kernel's (instructions, call frames) or the library's (functions, maps, state,
    /// the object's analysis budget, ELF symbols and sections).
    Limit,
    /// More errors than are kept; the message counts them.
    MoreErrors,
    /// A program not analyzed because code it uses has a bad relocation (reported under [`InspectErrorKind::Relocation`]).
    Tainted,
    /// A load override ([`crate::LoadOverride`]) names no program of the object, or a type it cannot be.
    Override,
}

/// A problem that stopped the analysis of one program or of the whole object, with where it is.
///
/// `message` is the whole human-readable text (naming the file, and the program, section and instruction where
/// known), as it is printed; the other fields say the same for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct InspectError {
    /// The file, as the caller named it.
    pub file: String,
    /// The program whose analysis stopped; `None` for a problem of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The ELF section, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// The byte offset in `section` (relocations, symbols), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The instruction offset in `section`, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insn: Option<u64>,
    /// What kind of problem it is.
    pub kind: InspectErrorKind,
    /// The problem in words, as printed.
    pub message: String,
}

impl InspectError {
    /// An error of `file` not tied to a section, such as one reading it.
    pub fn new(file: &str, kind: InspectErrorKind, message: impl Into<String>) -> InspectError {
        InspectError {
            file: file.to_owned(),
            program: None,
            section: None,
            offset: None,
            insn: None,
            kind,
            message: message.into(),
        }
    }
}

/// How a map was declared in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    /// `struct bpf_map_def` (libbpf legacy) in a `maps` section.
    Legacy,
    /// iproute2 `struct bpf_elf_map` in a `maps` section.
    Iproute2,
    /// BTF-defined map in `.maps`.
    Btf,
    /// Global data (`.data`, `.bss`, `.rodata*`, `.kconfig`, custom `.data.*`), an array of one element.
    GlobalData,
}

/// A map declared by the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDef {
    /// Symbol name (section name for global data).
    pub name: String,
    /// How the object declares it.
    pub kind: MapKind,
    /// Kernel `enum bpf_map_type` value (`BPF_MAP_TYPE_ARRAY` for global data).
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `map_flags` as declared (`BPF_F_*`).
    pub flags: u32,
    /// Pinning mode: 0 none, 1 by name (`LIBBPF_PIN_BY_NAME`, iproute2 `PIN_GLOBAL_NS`), 2 object namespace
    /// (iproute2 `PIN_OBJECT_NS`); iproute2's custom pinning ids (3 and up, from `/etc/iproute2/bpf_pinning`)
    /// as declared.
    pub pinning: u32,
    /// iproute2's map `id` (`struct bpf_elf_map`), which tail-call sections `ID/KEY` and `inner_id` refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// For a map of maps: the map whose definition is the inner maps' template (iproute2 `inner_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_map: Option<String>,
    /// For an inner map template: the slot of the map of maps it is placed in at load time (iproute2 `inner_idx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_idx: Option<u32>,
    /// Global data that the program cannot write (`.rodata*`, `.kconfig`).
    pub read_only: bool,
    /// Its value type holds a kptr (a pointer tagged `kptr`, `kptr_untrusted` or `percpu_kptr` in BTF): the
    /// kernel pointers a program can load from a map value and dereference.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kptr: bool,
}

impl MapDef {
    /// Whether a value loaded from this map's memory may be a kptr: a kptr field, or a map of maps, whose
    /// inner maps' value types the object does not settle.
    pub fn may_hold_kptr(&self) -> bool {
        self.kptr || matches!(self.map_type, MAP_TYPE_ARRAY_OF_MAPS | MAP_TYPE_HASH_OF_MAPS)
    }
}

/// A helper call target, by id and catalogue name (`unknown` when the id is not in the catalogue).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HelperRef {
    /// The helper id (`enum bpf_func_id`).
    pub id: u32,
    /// Its catalogue name.
    pub name: String,
}

/// The [`MapAccess::name`] of accesses to map memory the analysis cannot tie to a map of the object (a raw map fd,
/// an inner map of a map-in-map). Policies treat a write to it as unattributed, never as a write to an own map.
pub const UNKNOWN_MAP: &str = "(unknown map)";

/// What one program does with one map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MapAccess {
    /// The map's name ([`UNKNOWN_MAP`] for memory the analysis cannot tie to a map).
    pub name: String,
    /// The program reads the map (by helper or load).
    pub read: bool,
    /// The program writes the map (by helper, store or atomic).
    pub write: bool,
}

/// A tail call site and the prog array it goes through, when the analysis could tell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TailCall {
    /// The tail call instruction, in the linked layout.
    pub insn: u32,
    /// The prog array's name, when exactly one map of the object can be it.
    pub map: Option<String>,
}

/// A subprogram linked into a program, and where it starts in the program's linked layout.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subprogram {
    /// Function symbol name (`section+offset` when it has none).
    pub name: String,
    /// The section holding it.
    pub section: String,
    /// First instruction in the linked program.
    pub start: u32,
    /// Instruction offset within its section.
    pub section_offset: u32,
}

/// The capability metadata of one program: reachable code only (entry plus the subprograms it calls).
///
/// Instruction offsets are in the program's linked layout, the one the kernel sees: the entry function first, then
/// each subprogram (see [`ProgramMetadata::subprograms`]) where libbpf appends it: where first referred to, depth
/// first (what a subprogram refers to follows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramMetadata {
    /// The entry function's symbol name (the section's name for old objects without symbols).
    pub name: String,
    /// The name the kernel keeps, and `bpftool prog` and the gate's events show: `name` cut to 15 bytes
    /// ([`kernel_name`]); empty for a program only iproute2's own loader loads (it passes no name).
    #[serde(default)]
    pub kernel_name: String,
    /// The loaders that load this program ([`Loader`]; `docs/loaders.md`). Empty in reports written before it.
    #[serde(default)]
    pub loaders: Vec<Loader>,
    /// The ELF section holding the entry function.
    pub section: String,
    /// Instruction offset of the entry function within `section`.
    pub section_offset: u32,
    /// Program type, from the section name as libbpf reads it, or as a [`crate::LoadOverride`] sets it.
    pub prog_type: ProgType,
    /// Expected attach type, for program types that take one.
    pub attach_type: Option<AttachType>,
    /// Kernel function, tracepoint or other target named by the section (`do_sys_open` for `kprobe/do_sys_open`),
    /// or set by a [`crate::LoadOverride`].
    pub attach_target: Option<String>,
    /// Whether the program is sleepable (`.s` sections).
    pub sleepable: bool,
    /// Why the program type is `unspec`, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unspec_reason: Option<String>,
    /// The object's license.
    pub license: Option<String>,
    /// Instructions in the linked program (ld_imm64 counts as two, as in the kernel): the entry function,
    /// `subprograms` and `unreached_subprograms`.
    pub insn_count: u32,
    /// Helpers called in reachable code, by id.
    pub helpers: Vec<HelperRef>,
    /// Kfuncs called in reachable code, by name, sorted.
    pub kfuncs: Vec<String>,
    /// Subprograms linked after the entry function and analyzed (the program reaches them), in layout order.
    pub subprograms: Vec<Subprogram>,
    /// Subprograms linked in but never reached, in layout order: referred to only from code no path of the
    /// program reaches. libbpf appends them all the same, so they take their place in the layout and count in
    /// `insn_count`, but they are not analyzed and nothing in the report comes from them (the verifier refuses
    /// a program with unreachable instructions). Empty for every program a kernel would load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreached_subprograms: Vec<Subprogram>,
    /// Tail call sites.
    pub tail_calls: Vec<TailCall>,
    /// Maps used, one entry per name, sorted by name.
    pub maps: Vec<MapAccess>,
    /// The capability classes found, in [`Capability`] order.
    pub capabilities: Vec<Capability>,
    /// For each capability, the instructions that prove it.
    pub evidence: BTreeMap<Capability, Vec<u32>>,
    /// The classes the in-kernel gate will count for this program ([`crate::kernel_view`]).
    #[serde(default)]
    pub kernel_view: KernelView,
    /// What a reader should know: a load override applied, a register read on a path the verifier must prove
    /// dead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ProgramMetadata {
    /// The capability classes as a bitmask.
    pub fn class_set(&self) -> ClassSet {
        self.capabilities.iter().copied().collect()
    }

    /// Where an instruction of the linked program comes from: its section and offset there.
    pub fn locate(&self, insn: u32) -> (&str, u32) {
        fn last(list: &[Subprogram], insn: u32) -> Option<&Subprogram> {
            list.iter().rev().find(|s| s.start <= insn)
        }
        let found = match (last(&self.subprograms, insn), last(&self.unreached_subprograms, insn)) {
            (Some(a), Some(b)) => Some(if a.start >= b.start { a } else { b }),
            (a, b) => a.or(b),
        };
        match found {
            Some(s) => (&s.section, s.section_offset + (insn - s.start)),
            None => (&self.section, self.section_offset + insn),
        }
    }
}

/// What the in-kernel gate judges a program by (computed by [`crate::kernel_view`]): `classes`, of which
/// `conservative` are counted without proof.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelView {
    /// Every class the gate counts, proved or conservative, in [`Capability`] order.
    pub classes: Vec<Capability>,
    /// Among `classes`, those the tags counted (kernel_read, map_write, packet_write) and no call proved.
    pub conservative: Vec<Capability>,
    /// For each conservative class, the instruction the gate cites: the last load (kernel_read) or store or
    /// memory-writing call (map_write, packet_write) in the linked program the tags counted.
    #[serde(default)]
    pub evidence: BTreeMap<Capability, u32>,
}

impl KernelView {
    /// The classes as a bitmask.
    pub fn class_set(&self) -> ClassSet {
        self.classes.iter().copied().collect()
    }
}

/// Why a CBOR document could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CborError {
    #[error("CBOR encoding failed: {0}")]
    /// Encoding failed (the encoder's message).
    Encode(String),
    #[error("CBOR decoding failed: {0}")]
    /// The bytes are not a CBOR document of the expected type (the decoder's message).
    Decode(String),
}

/// Encodes any metadata type as CBOR.
pub fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CborError::Encode(e.to_string()))
}

/// Decodes a metadata type from CBOR.
pub fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| CborError::Decode(e.to_string()))
}
