//! ELF front end: code sections, programs, subprogram extents, maps, externs and relocations of a BPF object.
//!
//! Parsing is lenient in the way libbpf is strict only where it must be: a problem in one section or map is
//! recorded in [`Object::errors`] and the rest of the object is still read, so one bad program does not hide the
//! others. Only a file that is not a BPF ELF at all fails as a whole.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, Sym as _};
use object::{Endianness, Object as _, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

use crate::btf::BtfIndex;
use crate::insn::{RawInsn, INSN_SIZE};
use crate::metadata::{kernel_name, InspectErrorKind, Loader, MapDef, MapKind};
use crate::progtype::{MAP_TYPE_ARRAY, MAP_TYPE_ARRAY_OF_MAPS, MAP_TYPE_HASH_OF_MAPS, MAP_TYPE_PROG_ARRAY};
use crate::section::{self, SectionInfo};

/// Bytes of iproute2's `struct bpf_elf_map`, and of its version before `inner_id` and `inner_idx`.
const IPROUTE2_MAP_LEN: usize = 36;
const IPROUTE2_MAP_LEN_OLD: usize = 28;

/// Longest symbol or section name read: the kernel's `KSYM_NAME_LEN`, which every name it resolves (kfuncs,
/// ksyms, BTF names) stays under. Names are copied per relocation and per program, so their length multiplies
/// memory; and a lookup scans up to the length.
pub const MAX_NAME_LEN: usize = 512;
/// The kernel reads at most this many bytes of a program's license (`char license[128]` in `bpf_prog_load`).
pub const MAX_LICENSE_LEN: usize = 127;
/// Executable sections, and function symbols in them, an object may have. Each becomes a program or function
/// holding copies of its names (up to [`MAX_NAME_LEN`] each), so their count bounds the memory parsing takes.
pub const MAX_OBJECT_FUNCS: usize = 1 << 17;
/// Errors kept per object beyond relocation errors; the rest are counted in one [`ElfError::MoreErrors`]. An
/// object of a million bad map symbols would otherwise report a million errors.
pub const MAX_ERRORS: usize = 1000;

/// Why a symbol or section name cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("runs off the end of its string table")]
    Unterminated,
    #[error("is outside its string table")]
    OutOfRange,
    #[error("is not UTF-8")]
    NotUtf8,
}

/// The name at `offset` of an ELF string table, reading at most [`MAX_NAME_LEN`] bytes and a terminator.
fn name_at(table: &[u8], offset: u32) -> Result<&str, NameError> {
    let rest = usize::try_from(offset).ok().and_then(|o| table.get(o..)).ok_or(NameError::OutOfRange)?;
    let window = rest.get(..=MAX_NAME_LEN).unwrap_or(rest);
    match window.iter().position(|&b| b == 0).and_then(|n| window.get(..n)) {
        Some(name) => std::str::from_utf8(name).map_err(|_| NameError::NotUtf8),
        None if window.len() > MAX_NAME_LEN => Err(NameError::TooLong { limit: MAX_NAME_LEN }),
        None => Err(NameError::Unterminated),
    }
}

/// Why a relocation of a code section cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelocError {
    #[error("offset is not an instruction in the section")]
    NotAnInstruction,
    #[error("target is not a symbol")]
    NotASymbol,
    #[error("symbol {index}: {error}")]
    NoSuchSymbol { index: usize, error: String },
    #[error("undefined symbol without a readable name")]
    UnnamedExtern,
    #[error("code symbol {symbol} is not instruction-aligned")]
    MisalignedCode { symbol: String },
    #[error("refers to section {section} itself, not to a named map or variable (a static map?)")]
    SectionItself { section: String },
    #[error("symbol `{symbol}` in {section} is neither a map, global data, code nor an extern")]
    UnknownTarget { symbol: String, section: String },
    #[error("and {count} more bad relocations in this section (only the first is shown)")]
    More { count: usize },
}

/// Why a map definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("definition at byte {offset} is shorter than struct bpf_map_def")]
    Short { offset: u64 },
    #[error("definition has {size} bytes with unknown non-zero fields past byte {known}")]
    UnknownFields { size: usize, known: usize },
    #[error("BTF-defined maps need a .BTF section, and it is missing or unreadable")]
    NoBtf,
    #[error("symbol has no BTF map definition")]
    NoBtfDefinition,
    #[error("definition at byte {offset} has non-zero data; BTF-defined maps must be zero")]
    NonZeroBtfDefinition { offset: u64 },
    #[error("initial value at byte {offset}: only prog arrays and maps of maps can be initialized")]
    BadInitialValue { offset: u64 },
}

/// Why an object, or part of it, could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a valid ELF file: {0}")]
    Parse(#[source] object::Error),
    #[error("not a BPF object: ELF machine is {machine}, expected EM_BPF (247)")]
    NotBpf { machine: u16 },
    #[error("section {section}: cannot read data: {source}")]
    SectionData { section: String, source: object::Error },
    #[error("section {section}: size {size} is not a multiple of 8 bytes")]
    TruncatedCode { section: String, size: u64 },
    #[error("section {section}: relocation at byte offset {offset}: {reason}")]
    BadRelocation { section: String, offset: u64, reason: RelocError },
    #[error("section {section}: symbol {symbol} at byte offset {offset} is not instruction-aligned or out of range")]
    BadSymbol { section: String, symbol: String, offset: u64 },
    #[error("section {section}: map {map}: {reason}")]
    BadMap { section: String, map: String, reason: MapError },
    #[error("section .BTF: {0}")]
    Btf(#[from] crate::btf::BtfError),
    #[error("executable section {index}: name {reason}")]
    BadSectionName { index: usize, reason: NameError },
    #[error("section {section}: function symbol {symbol}: name {reason}")]
    BadSymbolName { section: String, symbol: usize, reason: NameError },
    #[error("{count} more errors not shown (only the first {MAX_ERRORS} are kept)")]
    MoreErrors { count: usize },
    #[error("the object has more than {limit} {what}")]
    TooMany { what: &'static str, limit: usize },
}

impl ElfError {
    /// The kind of an [`crate::InspectError`] reporting this.
    pub fn kind(&self) -> InspectErrorKind {
        match self {
            ElfError::Parse(_) => InspectErrorKind::NotElf,
            ElfError::NotBpf { .. } => InspectErrorKind::NotBpf,
            ElfError::SectionData { .. } | ElfError::TruncatedCode { .. } | ElfError::BadSectionName { .. } => {
                InspectErrorKind::Section
            }
            ElfError::BadRelocation { .. } => InspectErrorKind::Relocation,
            ElfError::BadSymbol { .. } | ElfError::BadSymbolName { .. } => InspectErrorKind::Symbol,
            ElfError::BadMap { .. } => InspectErrorKind::Map,
            ElfError::Btf(_) => InspectErrorKind::Btf,
            ElfError::MoreErrors { .. } => InspectErrorKind::MoreErrors,
            ElfError::TooMany { .. } => InspectErrorKind::Limit,
        }
    }

    /// The section the problem is in, where one is named.
    pub fn section(&self) -> Option<&str> {
        match self {
            ElfError::SectionData { section, .. }
            | ElfError::TruncatedCode { section, .. }
            | ElfError::BadRelocation { section, .. }
            | ElfError::BadSymbol { section, .. }
            | ElfError::BadMap { section, .. }
            | ElfError::BadSymbolName { section, .. } => Some(section),
            ElfError::Btf(_) => Some(".BTF"),
            _ => None,
        }
    }

    /// The byte offset in [`ElfError::section`], where known.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ElfError::BadRelocation { offset, .. } | ElfError::BadSymbol { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// A function symbol (program or subprogram) and its extent, in instructions within its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub start: usize,
    pub end: usize,
    /// Binding GLOBAL or WEAK.
    pub global: bool,
    /// `STT_FUNC`; otherwise a GLOBAL or WEAK `STT_NOTYPE` symbol, as LLVM before 8 wrote functions.
    pub is_func: bool,
}

/// What a relocated instruction refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelocTarget {
    /// The map itself (`ld_imm64` of a map: `BPF_PSEUDO_MAP_FD` once loaded).
    Map(usize),
    /// An address inside a map's value (global data: `BPF_PSEUDO_MAP_VALUE`).
    MapValue { map: usize, offset: u64 },
    /// A code location: a BPF-to-BPF call or a function address. `base` is the symbol's instruction index; the
    /// instruction's own immediate still has to be applied the way libbpf does.
    Code { section: usize, base: usize, symbol: String },
    /// An undefined symbol resolved by name at load time: a kfunc, or a typed or typeless `__ksym` variable.
    Extern { name: String },
}

/// One executable section, decoded into instruction slots.
#[derive(Debug, Clone)]
pub struct CodeSection {
    pub elf_index: usize,
    pub name: String,
    pub insns: Vec<RawInsn>,
    /// Relocations by instruction index.
    pub relocs: BTreeMap<usize, RelocTarget>,
    /// Function symbols sorted by start.
    pub funcs: Vec<Func>,
}

impl CodeSection {
    /// The extent of the function starting at `start`: its symbol's size, or up to the next function.
    pub fn func_end(&self, start: usize) -> usize {
        // `funcs` is sorted by start with one function per start: a search, not a scan, since every program
        // and subprogram of a section with a million functions asks.
        let i = self.funcs.partition_point(|f| f.start < start);
        let sized = self.funcs.get(i).filter(|f| f.start == start).map(|f| f.end);
        let next = self.funcs.get(i..).unwrap_or_default().iter().map(|f| f.start).find(|&s| s > start);
        sized.or(next).unwrap_or(self.insns.len()).min(self.insns.len())
    }

    /// The name of the function starting at `start`, if a symbol names it.
    pub fn func_name(&self, start: usize) -> Option<&str> {
        let i = self.funcs.partition_point(|f| f.start < start);
        self.funcs.get(i).filter(|f| f.start == start).map(|f| f.name.as_str())
    }
}

/// A program: an entry function in a code section, with what its section name says about it.
#[derive(Debug, Clone)]
pub struct ProgramEntry {
    pub name: String,
    /// Index into [`Object::sections`].
    pub section: usize,
    pub start: usize,
    pub info: SectionInfo,
    /// The loaders that load it (`docs/loaders.md`), in [`Loader::ALL`] order.
    pub loaders: Vec<Loader>,
    /// The name the kernel keeps ([`kernel_name`]); empty when only iproute2's own loader, which passes none,
    /// loads it.
    pub kernel_name: String,
    /// Notes for the program's report (load overrides applied).
    pub notes: Vec<String>,
}

/// A parsed BPF object. It borrows its BTF sections from the bytes it was parsed from (a large object's `.BTF`
/// is most of the file: copying it cost more than indexing it).
#[derive(Debug)]
pub struct Object<'data> {
    pub little_endian: bool,
    pub license: Option<String>,
    pub maps: Vec<MapDef>,
    pub sections: Vec<CodeSection>,
    pub programs: Vec<ProgramEntry>,
    /// The externs (kfuncs and `__ksym` variables) the object's BTF declares in its `.ksyms` DATASEC.
    pub externs: HashMap<String, Extern>,
    /// `(entry function, exception callback)` pairs from BTF decl tags ([`crate::btf::BtfIndex::exception_callbacks`]).
    pub exception_callbacks: Vec<(String, String)>,
    /// The `.BTF` section as read, for what is judged at load time (CO-RE relocations, externs): see
    /// [`crate::unstable::core_reloc`]. Kept with what indexing it found: change it by replacing it, not by
    /// writing into it (bytes of the same address and length are taken for the ones parsed).
    pub btf_data: Option<Cow<'data, [u8]>>,
    /// The `.BTF.ext` section as read: function and line info, and CO-RE relocation records.
    pub btf_ext_data: Option<Cow<'data, [u8]>>,
    /// Names of the weak undefined symbols (`__weak` kfuncs and `__ksym` variables), sorted: libbpf lets those
    /// be missing from the kernel.
    pub weak_externs: Vec<String>,
    /// Problems that made part of the object unreadable.
    pub errors: Vec<ElfError>,
    /// How loaders read the object, for the report ([`crate::ObjectReport::notes`]).
    pub notes: Vec<String>,
    /// Programs' entry functions ([`Object::entry_name`]) whose BTF prototype returns `void`, sorted: the entry of
    /// a struct_ops or LSM program declared so need not set r0 (the kernel skips the return check for hooks
    /// returning `void`).
    pub void_funcs: Vec<String>,
    /// Functions struct_ops map members point to, sorted, and whether those members' prototypes all return
    /// `void`: what the kernel checks the program's return by.
    pub struct_ops_members: Vec<(String, bool)>,
    /// Errors past [`MAX_ERRORS`], counted only.
    pub(crate) dropped_errors: usize,
    /// Positions in `sections`, sorted by name (then position); empty for an object not from [`Object::parse`].
    pub(crate) by_name: Vec<usize>,
    /// What indexing `btf_data` found, kept so that [`Object::btf_index`] need not walk its types again.
    pub(crate) btf_parts: Option<BtfParts>,
}

/// [`crate::btf::IndexParts`] of the bytes of one `btf_data`: their address and length tell whether `btf_data`
/// are still the bytes they were found in.
#[derive(Debug)]
pub(crate) struct BtfParts {
    at: (usize, usize),
    parts: crate::btf::IndexParts,
}

impl Object<'_> {
    /// The index of `btf_data`, for a caller that took it out of the object (see `core_reloc::rewrite`): from
    /// what parsing the object found when `data` are still the bytes it parsed, by [`crate::btf::index`]
    /// otherwise; `None` when the section does not index.
    pub(crate) fn btf_index<'a>(
        data: &'a [u8],
        little_endian: bool,
        parts: Option<&'a BtfParts>,
    ) -> Option<BtfIndex<'a>> {
        match parts {
            Some(p) if p.at == (data.as_ptr() as usize, data.len()) => {
                crate::btf::index_again(data, little_endian, &p.parts)
            }
            _ => crate::btf::index(data, little_endian).ok(),
        }
    }
}

fn is_global_data(name: &str) -> bool {
    name == ".data"
        || name == ".bss"
        || name == ".rodata"
        || name.starts_with(".data.")
        || name.starts_with(".bss.")
        || name.starts_with(".rodata.")
        || name == ".addr_space.1"
}

/// What BTF's `.ksyms` DATASEC says of an extern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extern {
    /// A kfunc and its parameter count (a variadic `...` is not counted).
    Func { params: usize },
    /// A `__ksym` variable. libbpf loads a typed one as `BPF_PSEUDO_BTF_ID` (a BTF pointer), a typeless one
    /// (`const void`) as a plain address.
    Var { typed: bool },
}

fn externs(btf: &BtfIndex<'_>) -> HashMap<String, Extern> {
    let mut out = HashMap::new();
    for v in btf.datasec(".ksyms").unwrap_or_default() {
        let kind = match btf.func_param_count(v.var_id) {
            Some(params) => Extern::Func { params },
            None => Extern::Var { typed: btf.resolve(v.type_id).is_some_and(|t| t != 0) },
        };
        out.insert(v.name, kind);
    }
    out
}

/// The size of libbpf's `.kconfig` map: externs sorted by alignment (largest first), then name, each aligned.
fn kconfig_layout_size(btf: &BtfIndex<'_>, vars: &[crate::btf::DatasecVar]) -> u32 {
    let mut sized: Vec<(u32, u32, &str)> = vars
        .iter()
        .map(|v| {
            let size = btf.size_of(v.type_id).unwrap_or(v.size);
            let align = if size == 0 { 1 } else { 1u32 << size.min(8).ilog2() };
            (align, size, v.name.as_str())
        })
        .collect();
    sized.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(b.2)));
    sized.iter().fold(0u32, |end, &(align, size, _)| end.div_ceil(align).saturating_mul(align).saturating_add(size))
}

/// An ELF section's `sh_flags`.
fn sh_flags<'data>(sec: &impl ObjectSection<'data>) -> u64 {
    match sec.flags() {
        object::SectionFlags::Elf { sh_flags } => sh_flags,
        _ => 0,
    }
}

/// The entry functions of a code section: its global functions, or every function if none is global.
/// aya's program section kinds (`ProgramSection::from_str` in `aya-obj`): the part of a section name before the
/// first `/`. aya refuses an object with an executable section of another kind.
const AYA_KINDS: &[&str] = &[
    "kprobe",
    "kretprobe",
    "uprobe",
    "uprobe.s",
    "uprobe.multi",
    "uprobe.multi.s",
    "uretprobe",
    "uretprobe.s",
    "uretprobe.multi",
    "uretprobe.multi.s",
    "xdp",
    "xdp.frags",
    "tp_btf",
    "tracepoint",
    "tp",
    "socket",
    "sk_msg",
    "sk_skb",
    "sockops",
    "classifier",
    "cgroup_skb",
    "cgroup",
    "lirc_mode2",
    "perf_event",
    "raw_tp",
    "raw_tracepoint",
    "lsm",
    "lsm.s",
    "lsm_cgroup",
    "fentry",
    "fentry.s",
    "fexit",
    "fexit.s",
    "flow_dissector",
    "freplace",
    "sk_lookup",
    "sk_reuseport",
    "iter",
    "iter.s",
];

fn aya_kind(section: &str) -> bool {
    AYA_KINDS.contains(&section.split('/').next().unwrap_or(section))
}

/// The functions the struct_ops maps of `.struct_ops` and `.struct_ops.link` point to (their relocations), each
/// with whether its members' prototypes all return `void`, sorted by name. Searches, not scans, and one entry per
/// function: an object may have a million relocations and a struct of 65,535 members.
fn struct_ops_members(
    file: &ElfFile64<'_, Endianness>,
    names: &SectionNames<'_>,
    syms: &Symbols<'_>,
    btf: &BtfIndex<'_>,
) -> Vec<(String, bool)> {
    let mut by_func: HashMap<&str, bool> = HashMap::new();
    for sec in file.sections() {
        let Ok(name @ (".struct_ops" | ".struct_ops.link")) = names.of(sec.elf_section_header()) else { continue };
        let Some(mut vars) = btf.datasec(name) else { continue };
        vars.sort_unstable_by_key(|v| v.offset);
        let mut members: HashMap<u32, Vec<(u32, bool)>> = HashMap::new();
        for (offset, reloc) in sec.relocations() {
            let RelocationTarget::Symbol(i) = reloc.target() else { continue };
            let Some(func) = syms.get(i.0).and_then(Sym::name) else { continue };
            let at = vars.partition_point(|v| u64::from(v.offset) <= offset);
            let Some(var) = at.checked_sub(1).and_then(|i| vars.get(i)) else { continue };
            let Some(within) = offset.checked_sub(u64::from(var.offset)).filter(|&w| w < u64::from(var.size)) else {
                continue;
            };
            let list = members.entry(var.type_id).or_insert_with(|| btf.fn_ptr_members(var.type_id));
            let found = u32::try_from(within).ok().and_then(|w| list.binary_search_by_key(&w, |&(o, _)| o).ok());
            if let Some(&(_, void)) = found.and_then(|k| list.get(k)) {
                // Members of several maps may point to one function: void only if every one is.
                by_func.entry(func).and_modify(|v| *v &= void).or_insert(void);
            }
        }
    }
    let mut out: Vec<(String, bool)> = by_func.into_iter().map(|(f, v)| (f.to_owned(), v)).collect();
    out.sort();
    out
}

/// [`Object::error`] for callers that hold another borrow of the object.
fn push_capped(errors: &mut Vec<ElfError>, dropped: &mut usize, e: ElfError) {
    if errors.len() < MAX_ERRORS {
        errors.push(e);
    } else {
        *dropped += 1;
    }
}

/// libbpf treats these extern names as `.kconfig` values rather than kernel symbols.
fn is_kconfig_extern(name: &str) -> bool {
    name.starts_with("CONFIG_") || name.starts_with("LINUX_")
}

/// What parsing needs of one ELF symbol, read once for the several passes over the symbols (maps, functions,
/// relocations). The name is looked up only where it is used: most symbols never need it.
struct Sym<'data> {
    section: Option<SectionIndex>,
    kind: SymbolKind,
    /// `STT_*` of `st_info`.
    st_type: u8,
    address: u64,
    size: u64,
    global: bool,
    undefined: bool,
    weak: bool,
    /// `st_name` in `strtab`, the symbol table's string table.
    name_offset: u32,
    strtab: &'data [u8],
}

impl<'data> Sym<'data> {
    fn name_checked(&self) -> Result<&'data str, NameError> {
        name_at(self.strtab, self.name_offset)
    }
    /// `None` when the name is unreadable, too long or not UTF-8.
    fn name(&self) -> Option<&'data str> {
        self.name_checked().ok()
    }
}

/// The symbol table, indexed by ELF symbol index (0, the null symbol, is absent).
struct Symbols<'data>(Vec<Sym<'data>>);

impl<'data> Symbols<'data> {
    fn read(file: &ElfFile64<'data, Endianness>) -> Self {
        let table = file.elf_symbol_table();
        let strtab = file.section_by_index(table.string_section()).and_then(|s| s.data()).unwrap_or_default();
        let endian = file.endian();
        let mut syms = Vec::with_capacity(table.len());
        syms.extend(file.symbols().map(|s| Sym {
            section: s.section_index(),
            kind: s.kind(),
            st_type: s.elf_symbol().st_type(),
            address: s.address(),
            size: s.size(),
            global: s.is_global(),
            undefined: s.is_undefined(),
            weak: s.is_weak(),
            name_offset: s.elf_symbol().st_name(endian),
            strtab,
        }));
        Symbols(syms)
    }
    fn get(&self, index: usize) -> Option<&Sym<'data>> {
        self.0.get(index.checked_sub(1)?)
    }
    /// `(symbol index, symbol)` of every symbol.
    fn iter(&self) -> impl Iterator<Item = (usize, &Sym<'data>)> {
        (1..).zip(self.0.iter())
    }
}

/// Section names, read from the section header string table with [`name_at`]'s bound (the `object` crate's
/// lookup scans to the terminator, however far).
struct SectionNames<'data> {
    shstrtab: &'data [u8],
    endian: Endianness,
}

impl<'data> SectionNames<'data> {
    fn new(file: &ElfFile64<'data, Endianness>, data: &'data [u8]) -> Self {
        let endian = file.endian();
        let shstrtab = file
            .elf_header()
            .shstrndx(endian, data)
            .ok()
            .and_then(|i| file.section_by_index(SectionIndex(i as usize)).ok())
            .and_then(|s| s.data().ok())
            .unwrap_or_default();
        SectionNames { shstrtab, endian }
    }
    fn of(&self, sec: &impl object::read::elf::SectionHeader<Endian = Endianness>) -> Result<&'data str, NameError> {
        name_at(self.shstrtab, sec.sh_name(self.endian))
    }
    /// The name of section `index`, for messages.
    fn by_index(&self, file: &ElfFile64<'data, Endianness>, index: SectionIndex) -> Option<&'data str> {
        file.section_by_index(index).ok().and_then(|s| self.of(s.elf_section_header()).ok())
    }
}

/// What an ELF section is to the parser, by section index.
#[derive(Clone, Copy)]
enum SecRole {
    Other,
    /// Position in [`Object::sections`].
    Code(usize),
    /// Map id of a global data section.
    Data(usize),
}

const NO_MAP: usize = usize::MAX;

/// What [`Object::read_sections`] found: each section's role and where the BTF and map definitions are.
struct Layout<'data> {
    /// By ELF section index.
    roles: Vec<SecRole>,
    btf: Option<BtfIndex<'data>>,
    legacy_maps: Option<SectionIndex>,
    /// The legacy map section is named exactly `maps`, which libbpf 1.x refuses.
    legacy_maps_exact: bool,
    btf_maps: Option<SectionIndex>,
}

impl Layout<'_> {
    fn role(&self, i: Option<SectionIndex>) -> SecRole {
        i.and_then(|i| self.roles.get(i.0)).copied().unwrap_or(SecRole::Other)
    }
}

/// Resolves the relocations of code sections against what the rest of the object defines.
struct Relocator<'a, 'data> {
    file: &'a ElfFile64<'data, Endianness>,
    names: &'a SectionNames<'data>,
    syms: &'a Symbols<'data>,
    layout: &'a Layout<'data>,
    /// By ELF symbol index, the map it names ([`NO_MAP`] for none).
    map_syms: Vec<usize>,
    /// The `.kconfig` DATASEC's variables, sorted; `None` without BTF.
    kconfig_names: Option<Vec<&'a str>>,
    /// The `.kconfig` map, once a relocation needed it.
    kconfig_map: Option<usize>,
}

impl Relocator<'_, '_> {
    /// The relocations of code section `pos`. One bad relocation already keeps the section's programs from being
    /// analyzed: only the first is reported, and the rest counted, so a million of them cost no memory.
    fn relocate(&mut self, obj: &mut Object<'_>, pos: usize) {
        let Ok(sec) = self.file.section_by_index(SectionIndex(obj.sections[pos].elf_index)) else { return };
        let section = obj.sections[pos].name.clone();
        let mut bad_relocs: (Option<ElfError>, usize, u64) = (None, 0, 0);
        for (offset, reloc) in sec.relocations() {
            let insn = (offset / INSN_SIZE as u64) as usize;
            let target = if offset % INSN_SIZE as u64 != 0 || insn >= obj.sections[pos].insns.len() {
                Err(RelocError::NotAnInstruction)
            } else {
                self.target(obj, reloc.target())
            };
            match target {
                Ok(target) => {
                    obj.sections[pos].relocs.insert(insn, target);
                }
                Err(reason) if bad_relocs.0.is_none() => {
                    bad_relocs.0 = Some(ElfError::BadRelocation { section: section.clone(), offset, reason });
                }
                Err(_) => {
                    if bad_relocs.1 == 0 {
                        bad_relocs.2 = offset;
                    }
                    bad_relocs.1 += 1;
                }
            }
        }
        let (first, more, offset) = bad_relocs;
        obj.errors.extend(first);
        if more > 0 {
            obj.errors.push(ElfError::BadRelocation { section, offset, reason: RelocError::More { count: more } });
        }
    }

    /// What a relocation refers to, or why it cannot be resolved.
    fn target(&mut self, obj: &mut Object<'_>, target: RelocationTarget) -> Result<RelocTarget, RelocError> {
        let RelocationTarget::Symbol(sym_idx) = target else {
            return Err(RelocError::NotASymbol);
        };
        let Some(sym) = self.syms.get(sym_idx.0) else {
            // Not in the symbol table: the object crate words the error.
            let e = self.file.symbol_by_index(sym_idx).err().map_or_else(|| "no such symbol".into(), |e| e.to_string());
            return Err(RelocError::NoSuchSymbol { index: sym_idx.0, error: e });
        };
        let map = self.map_syms.get(sym_idx.0).copied().unwrap_or(NO_MAP);
        let sym_name = || sym.name().unwrap_or("");
        if map != NO_MAP {
            return Ok(RelocTarget::Map(map));
        }
        if sym.undefined {
            let sym_name = sym_name();
            if sym_name.is_empty() {
                return Err(RelocError::UnnamedExtern);
            }
            let is_kconfig = match &self.kconfig_names {
                Some(names) => names.binary_search(&sym_name).is_ok(),
                None => is_kconfig_extern(sym_name),
            };
            return Ok(if is_kconfig {
                let map = *self.kconfig_map.get_or_insert_with(|| obj.kconfig_map(0));
                RelocTarget::MapValue { map, offset: 0 }
            } else {
                RelocTarget::Extern { name: sym_name.to_owned() }
            });
        }
        match self.layout.role(sym.section) {
            SecRole::Data(map) => Ok(RelocTarget::MapValue { map, offset: sym.address }),
            SecRole::Code(target_sec) => {
                let sym_name = sym_name();
                if sym.address % INSN_SIZE as u64 != 0 {
                    return Err(RelocError::MisalignedCode { symbol: sym_name.to_owned() });
                }
                let name = if sym.kind == SymbolKind::Section {
                    obj.sections[target_sec].name.clone()
                } else {
                    sym_name.to_owned()
                };
                Ok(RelocTarget::Code { section: target_sec, base: (sym.address / 8) as usize, symbol: name })
            }
            SecRole::Other => {
                let sec_name = || sym.section.and_then(|i| self.names.by_index(self.file, i));
                if sym.kind == SymbolKind::Section {
                    return Err(RelocError::SectionItself { section: sec_name().unwrap_or_default().to_owned() });
                }
                let in_sec = sec_name().unwrap_or("no section");
                Err(RelocError::UnknownTarget { symbol: sym_name().to_owned(), section: in_sec.to_owned() })
            }
        }
    }
}

impl<'data> Object<'data> {
    /// Parses a BPF ELF object.
    pub fn parse(data: &'data [u8]) -> Result<Object<'data>, ElfError> {
        // The ELF reader needs its headers 8-byte aligned; bytes from `include_bytes!` or a slice of a larger
        // buffer may not be, so those are copied to an aligned place first (and the object keeps its own BTF).
        if data.as_ptr().align_offset(8) != 0 {
            let mut buf = vec![0u8; data.len() + 7];
            let off = buf.as_ptr().align_offset(8).min(7);
            buf[off..off + data.len()].copy_from_slice(data);
            return Object::parse_aligned(&buf[off..off + data.len()]).map(Object::into_owned);
        }
        Object::parse_aligned(data)
    }

    /// The object with copies of the bytes it borrowed.
    fn into_owned(self) -> Object<'static> {
        let own = |b: Option<Cow<'_, [u8]>>| b.map(|b| Cow::<'static, [u8]>::Owned(b.into_owned()));
        let btf_data = own(self.btf_data);
        // The index found by parsing is of the borrowed bytes: kept for their copy.
        let btf_parts = match (&btf_data, self.btf_parts) {
            (Some(d), Some(p)) => Some(BtfParts { at: (d.as_ptr() as usize, d.len()), parts: p.parts }),
            _ => None,
        };
        Object { btf_data, btf_ext_data: own(self.btf_ext_data), btf_parts, ..self }
    }

    /// The object without its BTF sections, which its code does not need (for a report's disassembly).
    pub fn without_btf(self) -> Object<'static> {
        Object { btf_data: None, btf_ext_data: None, btf_parts: None, ..self }
    }

    fn parse_aligned(data: &'data [u8]) -> Result<Object<'data>, ElfError> {
        let file = ElfFile64::<Endianness>::parse(data).map_err(ElfError::Parse)?;
        let endian = file.endian();
        let machine = file.elf_header().e_machine(endian);
        if machine != elf::EM_BPF {
            return Err(ElfError::NotBpf { machine });
        }
        let mut obj = Object {
            little_endian: file.is_little_endian(),
            license: None,
            maps: Vec::new(),
            sections: Vec::new(),
            programs: Vec::new(),
            externs: HashMap::new(),
            exception_callbacks: Vec::new(),
            btf_data: None,
            btf_ext_data: None,
            weak_externs: Vec::new(),
            errors: Vec::new(),
            notes: Vec::new(),
            void_funcs: Vec::new(),
            struct_ops_members: Vec::new(),
            dropped_errors: 0,
            by_name: Vec::new(),
            btf_parts: None,
        };
        let names = SectionNames::new(&file, data);
        let mut layout = obj.read_sections(&file, &names)?;
        let btf = layout.btf.as_ref();
        if let Some(b) = btf {
            obj.externs = externs(b);
            obj.exception_callbacks = b.exception_callbacks();
        }
        // `.kconfig` externs: BTF's .kconfig DATASEC names them; without BTF, libbpf's naming convention does.
        let kconfig = btf.and_then(|b| b.datasec(".kconfig"));
        if let (Some(b), Some(vars)) = (btf, &kconfig) {
            obj.kconfig_map(kconfig_layout_size(b, vars));
        }
        let syms = Symbols::read(&file);
        if let Some(b) = btf {
            obj.struct_ops_members = struct_ops_members(&file, &names, &syms, b);
        }
        let mut weak: Vec<String> = syms
            .iter()
            .filter(|(_, s)| s.undefined && s.weak)
            .filter_map(|(_, s)| s.name())
            .map(str::to_owned)
            .collect();
        weak.sort_unstable();
        obj.weak_externs = weak;
        let map_syms = obj.read_maps(&file, &names, &syms, &layout);
        obj.read_funcs(&syms, &layout)?;
        obj.find_programs(layout.legacy_maps_exact);
        if let Some(b) = layout.btf.as_ref() {
            let mut entries: Vec<&str> = obj.programs.iter().map(|p| obj.entry_name(p)).collect();
            entries.sort_unstable();
            let void_funcs = b.void_funcs(&entries);
            obj.void_funcs = void_funcs;
        }
        // Sorted once: every relocation against an undefined symbol asks.
        let kconfig_names: Option<Vec<&str>> = kconfig.as_ref().map(|vars| {
            let mut v: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
            v.sort_unstable();
            v
        });
        let mut relocs = Relocator {
            file: &file,
            names: &names,
            syms: &syms,
            layout: &layout,
            map_syms,
            kconfig_names,
            kconfig_map: None,
        };
        for pos in 0..obj.sections.len() {
            relocs.relocate(&mut obj, pos);
        }
        if let (Some(b), Some(data)) = (layout.btf.take(), &obj.btf_data) {
            obj.btf_parts = Some(BtfParts { at: (data.as_ptr() as usize, data.len()), parts: b.into_parts() });
        }
        if obj.dropped_errors > 0 {
            obj.errors.push(ElfError::MoreErrors { count: obj.dropped_errors });
        }
        let mut by_name: Vec<usize> = (0..obj.sections.len()).collect();
        by_name.sort_by(|&a, &b| (&obj.sections[a].name, a).cmp(&(&obj.sections[b].name, b)));
        obj.by_name = by_name;
        Ok(obj)
    }

    /// Reads every section by its role: the license, BTF, code, global data, and where the map definitions are.
    fn read_sections(
        &mut self,
        file: &ElfFile64<'data, Endianness>,
        names: &SectionNames<'data>,
    ) -> Result<Layout<'data>, ElfError> {
        let mut layout = Layout {
            // Sections are few and densely numbered: a table beats hashing their indices.
            roles: vec![SecRole::Other; file.elf_section_table().len()],
            btf: None,
            legacy_maps: None,
            legacy_maps_exact: false,
            btf_maps: None,
        };
        let code_sections = file.sections().filter(|s| sh_flags(s) & u64::from(elf::SHF_EXECINSTR) != 0).count();
        if code_sections > MAX_OBJECT_FUNCS {
            return Err(ElfError::TooMany { what: "executable sections", limit: MAX_OBJECT_FUNCS });
        }
        self.sections.reserve_exact(code_sections);
        for sec in file.sections() {
            let sh_flags = sh_flags(&sec);
            let name = match names.of(sec.elf_section_header()) {
                Ok(name) => name,
                // A program must not vanish because its section name cannot be read.
                Err(reason) if sh_flags & u64::from(elf::SHF_EXECINSTR) != 0 => {
                    self.error(ElfError::BadSectionName { index: sec.index().0, reason });
                    continue;
                }
                Err(_) => continue,
            };
            let by_name = |n: &str| {
                n == "license"
                    || n == ".BTF"
                    || n == ".BTF.ext"
                    || n == "maps"
                    || n.starts_with("maps/")
                    || n == ".maps"
            };
            if sh_flags & u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR) == 0 && !by_name(name) {
                continue;
            }
            let role = if name == "license" {
                self.read_license(&sec);
                SecRole::Other
            } else if name == ".BTF.ext" {
                if let Ok(bytes) = sec.data() {
                    self.btf_ext_data = Some(Cow::Borrowed(bytes));
                }
                SecRole::Other
            } else if name == ".BTF" {
                match sec.data() {
                    Ok(bytes) => match crate::btf::index(bytes, self.little_endian) {
                        Ok(b) => {
                            layout.btf = Some(b);
                            self.btf_data = Some(Cow::Borrowed(bytes));
                        }
                        Err(e) => self.error(e.into()),
                    },
                    Err(source) => self.error(ElfError::SectionData { section: name.into(), source }),
                }
                SecRole::Other
            } else if name == "maps" || name.starts_with("maps/") {
                layout.legacy_maps = Some(sec.index());
                layout.legacy_maps_exact |= name == "maps";
                SecRole::Other
            } else if name == ".maps" {
                layout.btf_maps = Some(sec.index());
                SecRole::Other
            } else if sh_flags & u64::from(elf::SHF_EXECINSTR) != 0 {
                self.read_code(&sec, name)
            } else if is_global_data(name) && sh_flags & u64::from(elf::SHF_ALLOC) != 0 {
                self.maps.push(MapDef {
                    name: name.into(),
                    kind: MapKind::GlobalData,
                    map_type: MAP_TYPE_ARRAY,
                    key_size: 4,
                    value_size: u32::try_from(sec.size()).unwrap_or(u32::MAX),
                    max_entries: 1,
                    flags: 0,
                    pinning: 0,
                    id: None,
                    inner_map: None,
                    inner_idx: None,
                    read_only: name.starts_with(".rodata") || sh_flags & u64::from(elf::SHF_WRITE) == 0,
                    kptr: false,
                });
                SecRole::Data(self.maps.len() - 1)
            } else {
                SecRole::Other
            };
            if let Some(slot) = layout.roles.get_mut(sec.index().0) {
                *slot = role;
            }
        }
        Ok(layout)
    }

    /// The `license` section: what the kernel reads of it, the first 127 bytes up to a NUL.
    fn read_license(&mut self, sec: &impl ObjectSection<'data>) {
        if let Ok(bytes) = sec.data() {
            let bytes = bytes.get(..MAX_LICENSE_LEN).unwrap_or(bytes);
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            self.license = Some(String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned());
        }
    }

    /// An executable section: its instructions, when it has whole ones.
    fn read_code(&mut self, sec: &impl ObjectSection<'data>, name: &str) -> SecRole {
        match sec.data() {
            Ok(bytes) if bytes.len() % INSN_SIZE != 0 => {
                self.error(ElfError::TruncatedCode { section: name.into(), size: bytes.len() as u64 });
                SecRole::Other
            }
            Ok(bytes) if !bytes.is_empty() => {
                self.sections.push(CodeSection {
                    elf_index: sec.index().0,
                    name: name.into(),
                    insns: RawInsn::parse_all(bytes, self.little_endian),
                    relocs: BTreeMap::new(),
                    funcs: Vec::new(),
                });
                SecRole::Code(self.sections.len() - 1)
            }
            Ok(_) => SecRole::Other,
            Err(source) => {
                self.error(ElfError::SectionData { section: name.into(), source });
                SecRole::Other
            }
        }
    }

    /// Legacy and BTF-defined maps, and which global data holds kptrs. Returns, by ELF symbol index, the map each
    /// symbol names ([`NO_MAP`] for none).
    fn read_maps(
        &mut self,
        file: &ElfFile64<'_, Endianness>,
        names: &SectionNames<'_>,
        syms: &Symbols<'_>,
        layout: &Layout<'_>,
    ) -> Vec<usize> {
        let mut map_syms: Vec<usize> = vec![NO_MAP; syms.0.len() + 1];
        if let Some(idx) = layout.legacy_maps {
            self.read_legacy_maps(file, names, syms, idx, &mut map_syms);
        }
        if let Some(idx) = layout.btf_maps {
            self.read_btf_maps(file, syms, idx, layout.btf.as_ref(), &mut map_syms);
        }
        // Global data holds kptrs where its DATASEC's variables do.
        if let Some(b) = &layout.btf {
            for m in self.maps.iter_mut().filter(|m| m.kind == MapKind::GlobalData) {
                m.kptr = b.datasec(&m.name).is_some_and(|vars| vars.iter().any(|v| b.holds_kptr(v.type_id)));
            }
        }
        map_syms
    }

    /// The function symbols of code sections: each function's extent, sorted by start.
    fn read_funcs(&mut self, syms: &Symbols<'_>, layout: &Layout<'_>) -> Result<(), ElfError> {
        let mut funcs = 0usize;
        for (sym_idx, sym) in syms.iter() {
            let SecRole::Code(pos) = layout.role(sym.section) else { continue };
            // Functions are FUNC symbols; LLVM before 8 wrote them as GLOBAL NOTYPE symbols of size 0, which
            // cilium/ebpf and iproute2 take as functions too. LOCAL NOTYPE symbols are jump labels.
            let is_func = sym.st_type == elf::STT_FUNC;
            let old_llvm_func = sym.st_type == elf::STT_NOTYPE && sym.global && !sym.undefined;
            if !is_func && !old_llvm_func {
                continue;
            }
            funcs += 1;
            if funcs > MAX_OBJECT_FUNCS {
                return Err(ElfError::TooMany { what: "function symbols", limit: MAX_OBJECT_FUNCS });
            }
            let section = || self.sections[pos].name.clone();
            // Skipping the symbol would silently merge its code into the function before it.
            let name = match sym.name_checked() {
                Ok(name) => name,
                Err(reason) => {
                    let e = ElfError::BadSymbolName { section: section(), symbol: sym_idx, reason };
                    self.error(e);
                    continue;
                }
            };
            let (addr, size) = (sym.address, sym.size);
            let len = self.sections[pos].insns.len() as u64;
            if addr % INSN_SIZE as u64 != 0
                || size % INSN_SIZE as u64 != 0
                || addr / 8 >= len
                || (addr + size) / 8 > len
            {
                self.error(ElfError::BadSymbol { section: section(), symbol: name.into(), offset: addr });
                continue;
            }
            let start = (addr / 8) as usize;
            let end = if size == 0 { 0 } else { ((addr + size) / 8) as usize };
            self.sections[pos].funcs.push(Func { name: name.into(), start, end, global: sym.global, is_func });
        }
        for cs in &mut self.sections {
            // Of symbols at one start, a FUNC one names the function (then the first by name); the others are
            // aliases, and said so.
            cs.funcs.sort_by(|a, b| (a.start, !a.is_func, &a.name).cmp(&(b.start, !b.is_func, &b.name)));
            let notes = &mut self.notes;
            cs.funcs.dedup_by(|dup, kept| {
                let same = dup.start == kept.start;
                if same && notes.len() < MAX_ERRORS {
                    notes.push(format!(
                        "section {} insn {}: symbol {} is another name of function {}: one function, named {}",
                        cs.name, kept.start, dup.name, kept.name, kept.name
                    ));
                }
                same
            });
            for i in 0..cs.funcs.len() {
                let next = cs.funcs.get(i + 1).map_or(cs.insns.len(), |f| f.start);
                if let Some(f) = cs.funcs.get_mut(i).filter(|f| f.end == 0) {
                    f.end = next;
                }
            }
        }
        Ok(())
    }

    /// Records a problem, or past [`MAX_ERRORS`] only counts it.
    fn error(&mut self, e: ElfError) {
        push_capped(&mut self.errors, &mut self.dropped_errors, e);
    }

    /// The `.kconfig` map libbpf creates for kconfig externs, created on first use.
    fn kconfig_map(&mut self, value_size: u32) -> usize {
        if let Some(i) = self.maps.iter().position(|m| m.name == ".kconfig") {
            return i;
        }
        self.maps.push(MapDef {
            name: ".kconfig".into(),
            kind: MapKind::GlobalData,
            map_type: MAP_TYPE_ARRAY,
            key_size: 4,
            value_size,
            max_entries: 1,
            flags: 0,
            pinning: 0,
            id: None,
            inner_map: None,
            inner_idx: None,
            read_only: true,
            kptr: false,
        });
        self.maps.len() - 1
    }

    /// Programs are what some loader loads (`docs/loaders.md`): every function symbol of a code section other
    /// than `.text` (FUNC of any binding, and GLOBAL NOTYPE of LLVM before 8), each with the loaders that take
    /// it; a code section without one is one program named after the section, as iproute2 loads it.
    fn find_programs(&mut self, legacy_maps: bool) {
        let count = self.sections.iter().filter(|cs| cs.name != ".text").map(|cs| cs.funcs.len().max(1)).sum();
        self.programs.reserve_exact(count);
        // Whole-object refusals: libbpf 1.x refuses a `maps` section and static programs, aya unknown sections.
        let programs = || self.sections.iter().filter(|cs| cs.name != ".text");
        let static_prog = programs().find_map(|cs| cs.funcs.iter().find(|f| f.is_func && !f.global).map(|f| (cs, f)));
        let libbpf = !legacy_maps && static_prog.is_none();
        let aya_refuses = programs().find(|cs| !aya_kind(&cs.name)).map(|cs| cs.name.clone());
        let mut notes = Vec::new();
        let mut unnamed_more = 0usize;
        if legacy_maps {
            notes.push(
                "libbpf 1.x refuses this object: it has a legacy `maps` section (libbpf 0.x, cilium/ebpf, iproute2 \
                 and aya read it)"
                    .to_owned(),
            );
        } else if let Some((cs, f)) = static_prog {
            notes.push(format!(
                "libbpf refuses this object: program {} in section {} is static (\"program is static and not \
                 supported\"); cilium/ebpf and aya load it",
                f.name, cs.name
            ));
        }
        if let Some(sec) = &aya_refuses {
            notes.push(format!("aya refuses this object: section {sec} is not one of its program section kinds"));
        }
        for (pos, cs) in self.sections.iter().enumerate() {
            if cs.name == ".text" {
                continue;
            }
            let info = section::classify(&cs.name);
            if cs.funcs.is_empty() {
                // Kept like errors: a million such sections say no more than a thousand.
                if notes.len() < MAX_ERRORS {
                    notes.push(format!(
                        "section {}: no function symbol; only iproute2's own loader loads it (as one program, \
                         unnamed)",
                        cs.name
                    ));
                } else {
                    unnamed_more += 1;
                }
                self.programs.push(ProgramEntry {
                    name: cs.name.clone(),
                    section: pos,
                    start: 0,
                    info,
                    loaders: vec![Loader::Iproute2],
                    kernel_name: String::new(),
                    notes: Vec::new(),
                });
                continue;
            }
            for f in &cs.funcs {
                let mut loaders = Vec::with_capacity(4);
                if libbpf && f.is_func && f.global {
                    loaders.push(Loader::Libbpf);
                }
                loaders.push(Loader::CiliumEbpf);
                // iproute2's own loader loads a section whole, from its first instruction.
                if f.start == 0 {
                    loaders.push(Loader::Iproute2);
                }
                if f.is_func && aya_refuses.is_none() {
                    loaders.push(Loader::Aya);
                }
                self.programs.push(ProgramEntry {
                    name: f.name.clone(),
                    section: pos,
                    start: f.start,
                    info: info.clone(),
                    kernel_name: kernel_name(&f.name),
                    loaders,
                    notes: Vec::new(),
                });
            }
        }
        if unnamed_more > 0 {
            notes.push(format!("and {unnamed_more} more sections without a function symbol"));
        }
        self.notes.extend(notes);
    }

    /// `struct bpf_map_def` (5 or more u32) or iproute2's `struct bpf_elf_map` (9 u32, pinning at word 6).
    fn read_legacy_maps(
        &mut self,
        file: &ElfFile64<'_, Endianness>,
        names: &SectionNames<'_>,
        symbols: &Symbols<'_>,
        idx: SectionIndex,
        map_syms: &mut [usize],
    ) {
        let Ok(sec) = file.section_by_index(idx) else { return };
        let section = names.of(sec.elf_section_header()).unwrap_or("maps").to_owned();
        let data = match sec.data() {
            Ok(d) => d,
            Err(source) => return self.error(ElfError::SectionData { section, source }),
        };
        let mut syms: Vec<(u64, u64, &str, usize)> = symbols
            .iter()
            .filter(|(_, s)| s.section == Some(idx) && s.kind != SymbolKind::Section)
            .filter_map(|(i, s)| Some((s.address, s.size, s.name()?, i)))
            .collect();
        syms.sort();
        if syms.is_empty() {
            return;
        }
        let even_share = data.len() / syms.len();
        let little_endian = self.little_endian;
        // iproute2 maps: (map, id, inner_id, inner_idx).
        let mut ids: Vec<(usize, u32, u32, Option<u32>)> = Vec::new();
        for (addr, size, name, sym_idx) in syms {
            // A linker may leave gaps, so a symbol's own size wins over an even share of the section.
            let def_size = if size > 0 { usize::try_from(size).unwrap_or(usize::MAX) } else { even_share };
            // iproute2's `struct bpf_elf_map`: 9 u32, or 7 in versions before map-in-map (tc reads a shorter one
            // as its first fields, the rest zero).
            let iproute2 = def_size == IPROUTE2_MAP_LEN || def_size == IPROUTE2_MAP_LEN_OLD;
            let word = |i: usize| -> Option<u32> {
                let at = usize::try_from(addr).ok()?.checked_add(i * 4)?;
                let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
                Some(if little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
            };
            let fields = (word(0), word(1), word(2), word(3), word(4));
            let (Some(map_type), Some(key_size), Some(value_size), Some(max_entries), Some(flags)) = fields else {
                self.error(ElfError::BadMap {
                    section: section.clone(),
                    map: name.into(),
                    reason: MapError::Short { offset: addr },
                });
                continue;
            };
            // libbpf refuses definitions with fields it does not know about, unless they are zero.
            let known = if iproute2 { def_size } else { 20 };
            let extra = usize::try_from(addr)
                .ok()
                .and_then(|a| data.get(a.checked_add(known)?..a.checked_add(def_size.max(known))?));
            if extra.is_some_and(|b| b.iter().any(|&x| x != 0)) {
                self.error(ElfError::BadMap {
                    section: section.clone(),
                    map: name.into(),
                    reason: MapError::UnknownFields { size: def_size, known },
                });
                continue;
            }
            // iproute2's PIN_OBJECT_NS (1) and PIN_GLOBAL_NS (2) are libbpf's 2 and 1 (by name) in reports.
            let pinning = match (iproute2, word(6).unwrap_or(0)) {
                (false, _) => 0,
                (true, 1) => 2,
                (true, 2) => 1,
                (true, p) => p,
            };
            let ip_word = |i: usize| if iproute2 && (i + 1) * 4 <= def_size { word(i) } else { None };
            if iproute2 {
                ids.push((self.maps.len(), ip_word(5).unwrap_or(0), ip_word(7).unwrap_or(0), ip_word(8)));
            }
            if let Some(slot) = map_syms.get_mut(sym_idx) {
                *slot = self.maps.len();
            }
            self.maps.push(MapDef {
                name: name.into(),
                kind: if iproute2 { MapKind::Iproute2 } else { MapKind::Legacy },
                map_type,
                key_size,
                value_size,
                max_entries,
                flags,
                pinning,
                id: None,
                inner_map: None,
                inner_idx: None,
                read_only: false,
                kptr: false,
            });
        }
        // Map-in-map the iproute2 way: an outer map names its inner maps' template by `inner_id`; a map with an
        // `id` and an `inner_idx` (not -1) is placed at that slot of every map whose `inner_id` is its `id`. By
        // hash: a hostile object may define a million maps.
        let mut by_id: HashMap<u32, usize> = HashMap::new();
        let mut outer_ids = std::collections::HashSet::new();
        for &(m, id, inner_id, _) in &ids {
            if id != 0 {
                by_id.entry(id).or_insert(m);
            }
            if inner_id != 0 {
                outer_ids.insert(inner_id);
            }
        }
        for &(m, id, inner_id, inner_idx) in &ids {
            if id != 0 {
                self.maps[m].id = Some(id);
            }
            if inner_id != 0 {
                self.maps[m].inner_map = by_id.get(&inner_id).map(|&i| self.maps[i].name.clone());
            }
            let outer = id != 0 && outer_ids.contains(&id);
            if let Some(idx) = inner_idx.filter(|&i| i != u32::MAX && inner_id == 0 && outer) {
                self.maps[m].inner_idx = Some(idx);
            }
        }
    }

    fn read_btf_maps(
        &mut self,
        file: &ElfFile64<'_, Endianness>,
        symbols: &Symbols<'_>,
        idx: SectionIndex,
        btf: Option<&BtfIndex<'_>>,
        map_syms: &mut [usize],
    ) {
        let Some(btf) = btf else {
            return self.error(ElfError::BadMap { section: ".maps".into(), map: "*".into(), reason: MapError::NoBtf });
        };
        let defs = match btf.btf_map_defs() {
            Ok(d) => d,
            Err(e) => return self.error(e.into()),
        };
        let first = self.maps.len();
        for d in defs {
            self.maps.push(MapDef {
                name: d.name,
                kind: MapKind::Btf,
                map_type: d.map_type,
                key_size: d.key_size,
                value_size: d.value_size,
                max_entries: d.max_entries,
                flags: d.flags,
                pinning: d.pinning,
                id: None,
                inner_map: None,
                inner_idx: None,
                read_only: false,
                kptr: d.value_type_id.is_some_and(|t| btf.holds_kptr(t)),
            });
        }
        // Map ids by name, sorted; of two definitions with one name the later one wins.
        let mut by_name: Vec<(&str, usize)> =
            self.maps.iter().enumerate().skip(first).map(|(i, m)| (m.name.as_str(), i)).collect();
        by_name.sort();
        let lookup = |name: &str| {
            let end = by_name.partition_point(|(n, _)| *n <= name);
            end.checked_sub(1).and_then(|i| by_name.get(i)).filter(|(n, _)| *n == name).map(|&(_, m)| m)
        };
        let mut extents = Vec::new();
        for (sym_idx, s) in symbols.iter().filter(|(_, s)| s.section == Some(idx) && s.kind != SymbolKind::Section) {
            let Some(name) = s.name() else { continue };
            match lookup(name) {
                Some(map) => {
                    if let Some(slot) = map_syms.get_mut(sym_idx) {
                        *slot = map;
                    }
                    extents.push((s.address, s.address.saturating_add(s.size), map));
                }
                None => {
                    let e = ElfError::BadMap {
                        section: ".maps".into(),
                        map: name.into(),
                        reason: MapError::NoBtfDefinition,
                    };
                    push_capped(&mut self.errors, &mut self.dropped_errors, e);
                }
            }
        }
        // BTF carries the whole definition; the section itself must be zeros (loaders reject anything else).
        if let Ok(data) = file.section_by_index(idx).and_then(|s| s.data()) {
            for &(start, end, map) in &extents {
                let bytes =
                    usize::try_from(start).ok().zip(usize::try_from(end).ok()).and_then(|(a, b)| data.get(a..b));
                if bytes.is_some_and(|b| b.iter().any(|&x| x != 0)) {
                    self.error(ElfError::BadMap {
                        section: ".maps".into(),
                        map: self.maps.get(map).map(|m| m.name.clone()).unwrap_or_default(),
                        reason: MapError::NonZeroBtfDefinition { offset: start },
                    });
                }
            }
        }
        // Relocations in .maps initialize `values`: only prog arrays and map-in-map types have them. The map of
        // each is found by a search among the extents sorted by start.
        extents.sort_unstable();
        if let Ok(sec) = file.section_by_index(idx) {
            for (offset, _) in sec.relocations() {
                let i = extents.partition_point(|&(a, _, _)| a <= offset);
                let map = i.checked_sub(1).and_then(|i| extents.get(i)).filter(|&&(_, b, _)| offset < b).map(|e| e.2);
                let ok = map.and_then(|m| self.maps.get(m)).is_some_and(|m| {
                    matches!(m.map_type, MAP_TYPE_PROG_ARRAY | MAP_TYPE_ARRAY_OF_MAPS | MAP_TYPE_HASH_OF_MAPS)
                });
                if !ok {
                    let name = map.and_then(|m| self.maps.get(m)).map(|m| m.name.clone()).unwrap_or_else(|| "?".into());
                    self.error(ElfError::BadMap {
                        section: ".maps".into(),
                        map: name,
                        reason: MapError::BadInitialValue { offset },
                    });
                }
            }
        }
    }
}

impl Object<'_> {
    /// The name of `prog`'s entry function: its symbol's, or the program's where no symbol names it.
    pub fn entry_name<'a>(&'a self, prog: &'a ProgramEntry) -> &'a str {
        self.sections.get(prog.section).and_then(|s| s.func_name(prog.start)).unwrap_or(&prog.name)
    }

    /// The first code section named `section`: a search, since a text report asks once per capability of each of
    /// up to [`MAX_OBJECT_FUNCS`] programs.
    pub fn section_named(&self, section: &str) -> Option<&CodeSection> {
        if self.by_name.len() != self.sections.len() {
            return self.sections.iter().find(|c| c.name == section);
        }
        let name = |&i: &usize| self.sections.get(i).map_or("", |c| c.name.as_str());
        let i = self.by_name.partition_point(|p| name(p) < section);
        self.by_name.get(i).filter(|p| name(p) == section).and_then(|&p| self.sections.get(p))
    }
}
