//! ELF front end: code sections, programs, subprogram extents, maps, externs and relocations of a BPF object.
//!
//! Parsing is lenient in the way libbpf is strict only where it must be: a problem in one section or map is
//! recorded in [`Object::errors`] and the rest of the object is still read, so one bad program does not hide the
//! others. Only a file that is not a BPF ELF at all fails as a whole.

use std::collections::{BTreeMap, HashMap};

use object::elf;
use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object as _, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex, SymbolKind};

use crate::btf::Btf;
use crate::insn::{RawInsn, INSN_SIZE};
use crate::metadata::{MapDef, MapKind};
use crate::section::{self, SectionInfo};

/// `BPF_MAP_TYPE_ARRAY`, the type libbpf gives global data maps.
const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_ARENA`.
pub const MAP_TYPE_ARENA: u32 = 33;
/// `BPF_MAP_TYPE_PROG_ARRAY`.
pub const MAP_TYPE_PROG_ARRAY: u32 = 3;
/// Map-in-map types: lookups return an inner map, not a value.
pub const MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
pub const MAP_TYPE_HASH_OF_MAPS: u32 = 13;

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
    BadRelocation { section: String, offset: u64, reason: String },
    #[error("section {section}: symbol {symbol} at byte offset {offset} is not instruction-aligned or out of range")]
    BadSymbol { section: String, symbol: String, offset: u64 },
    #[error("section {section}: map {map}: {reason}")]
    BadMap { section: String, map: String, reason: String },
    #[error("section .BTF: {0}")]
    Btf(#[from] crate::btf::BtfError),
}

/// A function symbol (program or subprogram) and its extent, in instructions within its section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub start: usize,
    pub end: usize,
    pub global: bool,
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
        let sized = self.funcs.iter().find(|f| f.start == start).map(|f| f.end);
        let next = self.funcs.iter().map(|f| f.start).filter(|&s| s > start).min();
        sized.or(next).unwrap_or(self.insns.len()).min(self.insns.len())
    }

    /// The name of the function starting at `start`, if a symbol names it.
    pub fn func_name(&self, start: usize) -> Option<&str> {
        self.funcs.iter().find(|f| f.start == start).map(|f| f.name.as_str())
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
}

/// A parsed BPF object.
#[derive(Debug)]
pub struct Object {
    pub little_endian: bool,
    pub license: Option<String>,
    pub maps: Vec<MapDef>,
    pub sections: Vec<CodeSection>,
    pub programs: Vec<ProgramEntry>,
    /// Number of parameters of each extern function (kfunc) the object's BTF declares.
    pub extern_params: HashMap<String, usize>,
    /// Problems that made part of the object unreadable.
    pub errors: Vec<ElfError>,
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

/// Parameter counts of the functions in BTF's `.ksyms` DATASEC (a variadic `...` is not counted).
fn extern_params(btf: &Btf) -> HashMap<String, usize> {
    use crate::btf::BtfKind;
    let mut out = HashMap::new();
    for v in btf.datasec(".ksyms").unwrap_or_default() {
        let proto = match btf.type_by_id(v.var_id).map(|t| &t.kind) {
            Some(BtfKind::Func { proto, .. }) => *proto,
            _ => continue,
        };
        if let Some(BtfKind::FuncProto { params, .. }) = btf.type_by_id(proto).map(|t| &t.kind) {
            let n = params.iter().filter(|p| p.type_id != 0).count();
            out.insert(v.name.clone(), n);
        }
    }
    out
}

/// The size of libbpf's `.kconfig` map: externs sorted by alignment (largest first), then name, each aligned.
fn kconfig_layout_size(btf: &Btf, vars: &[crate::btf::DatasecVar]) -> u32 {
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

/// libbpf treats these extern names as `.kconfig` values rather than kernel symbols.
fn is_kconfig_extern(name: &str) -> bool {
    name.starts_with("CONFIG_") || name.starts_with("LINUX_")
}

impl Object {
    /// Parses a BPF ELF object.
    pub fn parse(data: &[u8]) -> Result<Object, ElfError> {
        let file = ElfFile64::<Endianness>::parse(data).map_err(ElfError::Parse)?;
        let endian = file.endian();
        let machine = file.elf_header().e_machine(endian);
        if machine != elf::EM_BPF {
            return Err(ElfError::NotBpf { machine });
        }
        let little_endian = file.is_little_endian();
        let mut obj = Object {
            little_endian,
            license: None,
            maps: Vec::new(),
            sections: Vec::new(),
            programs: Vec::new(),
            extern_params: HashMap::new(),
            errors: Vec::new(),
        };

        let mut btf = None;
        let mut legacy_maps_sec = None;
        let mut btf_maps_sec = None;
        // Map id of each global data section, by ELF section index.
        let mut data_maps: HashMap<SectionIndex, usize> = HashMap::new();
        // Code section position by ELF section index.
        let mut code: HashMap<SectionIndex, usize> = HashMap::new();

        for sec in file.sections() {
            let Ok(name) = sec.name() else { continue };
            let sh_flags = match sec.flags() {
                object::SectionFlags::Elf { sh_flags } => sh_flags,
                _ => 0,
            };
            if name == "license" {
                if let Ok(bytes) = sec.data() {
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    obj.license = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
                }
            } else if name == ".BTF" {
                match sec.data() {
                    Ok(bytes) => match crate::btf::parse(bytes, little_endian) {
                        Ok(b) => btf = Some(b),
                        Err(e) => obj.errors.push(e.into()),
                    },
                    Err(source) => obj.errors.push(ElfError::SectionData { section: name.into(), source }),
                }
            } else if name == "maps" || name.starts_with("maps/") {
                legacy_maps_sec = Some(sec.index());
            } else if name == ".maps" {
                btf_maps_sec = Some(sec.index());
            } else if sh_flags & u64::from(elf::SHF_EXECINSTR) != 0 {
                match sec.data() {
                    Ok(bytes) if bytes.len() % INSN_SIZE != 0 => {
                        obj.errors.push(ElfError::TruncatedCode { section: name.into(), size: bytes.len() as u64 })
                    }
                    Ok(bytes) if !bytes.is_empty() => {
                        code.insert(sec.index(), obj.sections.len());
                        obj.sections.push(CodeSection {
                            elf_index: sec.index().0,
                            name: name.into(),
                            insns: RawInsn::parse_all(bytes, little_endian),
                            relocs: BTreeMap::new(),
                            funcs: Vec::new(),
                        });
                    }
                    Ok(_) => {}
                    Err(source) => obj.errors.push(ElfError::SectionData { section: name.into(), source }),
                }
            } else if is_global_data(name) && sh_flags & u64::from(elf::SHF_ALLOC) != 0 {
                data_maps.insert(sec.index(), obj.maps.len());
                obj.maps.push(MapDef {
                    name: name.into(),
                    kind: MapKind::GlobalData,
                    map_type: MAP_TYPE_ARRAY,
                    key_size: 4,
                    value_size: u32::try_from(sec.size()).unwrap_or(u32::MAX),
                    max_entries: 1,
                    flags: 0,
                    pinning: 0,
                    read_only: name.starts_with(".rodata") || sh_flags & u64::from(elf::SHF_WRITE) == 0,
                });
            }
        }

        if let Some(b) = &btf {
            obj.extern_params = extern_params(b);
        }
        // `.kconfig` externs: BTF's .kconfig DATASEC names them; without BTF, libbpf's naming convention does.
        let kconfig = btf.as_ref().and_then(|b| Some((b, b.datasec(".kconfig")?)));
        let kconfig_names: Option<Vec<String>> =
            kconfig.as_ref().map(|(_, vars)| vars.iter().map(|v| v.name.clone()).collect());
        if let Some((b, vars)) = kconfig {
            obj.kconfig_map(kconfig_layout_size(b, &vars));
        }
        let is_kconfig = |name: &str| match &kconfig_names {
            Some(names) => names.iter().any(|n| n == name),
            None => is_kconfig_extern(name),
        };

        // Map symbols: by ELF symbol index, the map they name.
        let mut map_syms: HashMap<usize, usize> = HashMap::new();
        if let Some(idx) = legacy_maps_sec {
            obj.read_legacy_maps(&file, idx, &mut map_syms);
        }
        if let Some(idx) = btf_maps_sec {
            obj.read_btf_maps(&file, idx, btf.as_ref(), &mut map_syms);
        }

        // Function symbols and programs.
        for sym in file.symbols() {
            let Some(sec_idx) = sym.section_index() else { continue };
            let Some(&pos) = code.get(&sec_idx) else { continue };
            if sym.kind() != SymbolKind::Text {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let cs = &mut obj.sections[pos];
            let (addr, size) = (sym.address(), sym.size());
            let len = cs.insns.len() as u64;
            if addr % INSN_SIZE as u64 != 0
                || size % INSN_SIZE as u64 != 0
                || addr / 8 >= len
                || (addr + size) / 8 > len
            {
                obj.errors.push(ElfError::BadSymbol { section: cs.name.clone(), symbol: name.into(), offset: addr });
                continue;
            }
            let start = (addr / 8) as usize;
            let end = if size == 0 { 0 } else { ((addr + size) / 8) as usize };
            cs.funcs.push(Func { name: name.into(), start, end, global: sym.is_global() });
        }
        for cs in &mut obj.sections {
            cs.funcs.sort_by_key(|f| (f.start, f.name.clone()));
            cs.funcs.dedup_by_key(|f| f.start);
            let bounds: Vec<usize> = cs.funcs.iter().map(|f| f.start).collect();
            for (i, f) in cs.funcs.iter_mut().enumerate() {
                if f.end == 0 {
                    f.end = bounds.get(i + 1).copied().unwrap_or(cs.insns.len());
                }
            }
        }
        obj.find_programs();

        // Relocations of code sections.
        for sec in file.sections() {
            let Some(&pos) = code.get(&sec.index()) else { continue };
            for (offset, reloc) in sec.relocations() {
                let section = obj.sections[pos].name.clone();
                let bad = |reason: String| ElfError::BadRelocation { section: section.clone(), offset, reason };
                let insn = (offset / INSN_SIZE as u64) as usize;
                if offset % INSN_SIZE as u64 != 0 || insn >= obj.sections[pos].insns.len() {
                    obj.errors.push(bad("offset is not an instruction in the section".into()));
                    continue;
                }
                let RelocationTarget::Symbol(sym_idx) = reloc.target() else {
                    obj.errors.push(bad("target is not a symbol".into()));
                    continue;
                };
                let sym = match file.symbol_by_index(sym_idx) {
                    Ok(s) => s,
                    Err(e) => {
                        obj.errors.push(bad(format!("symbol {}: {e}", sym_idx.0)));
                        continue;
                    }
                };
                let sym_name = sym.name().unwrap_or("").to_owned();
                let target = if let Some(&map) = map_syms.get(&sym_idx.0) {
                    RelocTarget::Map(map)
                } else if sym.is_undefined() {
                    if sym_name.is_empty() {
                        obj.errors.push(bad("undefined symbol without a name".into()));
                        continue;
                    }
                    if is_kconfig(&sym_name) {
                        let map = obj.kconfig_map(0);
                        RelocTarget::MapValue { map, offset: 0 }
                    } else {
                        RelocTarget::Extern { name: sym_name }
                    }
                } else if let Some(&map) = sym.section_index().and_then(|i| data_maps.get(&i)) {
                    RelocTarget::MapValue { map, offset: sym.address() }
                } else if let Some(&target_sec) = sym.section_index().and_then(|i| code.get(&i)) {
                    if sym.address() % INSN_SIZE as u64 != 0 {
                        obj.errors.push(bad(format!("code symbol {sym_name} is not instruction-aligned")));
                        continue;
                    }
                    let name = if sym.kind() == SymbolKind::Section {
                        obj.sections[target_sec].name.clone()
                    } else {
                        sym_name
                    };
                    RelocTarget::Code { section: target_sec, base: (sym.address() / 8) as usize, symbol: name }
                } else {
                    if sym.kind() == SymbolKind::Section {
                        obj.errors.push(bad(format!(
                            "refers to section {} itself, not to a named map or variable (a static map?)",
                            sym.section_index()
                                .and_then(|i| file.section_by_index(i).ok())
                                .and_then(|s| s.name().ok().map(str::to_owned))
                                .unwrap_or_default()
                        )));
                        continue;
                    }
                    let in_sec = sym
                        .section_index()
                        .and_then(|i| file.section_by_index(i).ok())
                        .and_then(|s| s.name().ok().map(str::to_owned))
                        .unwrap_or_else(|| "no section".into());
                    obj.errors.push(bad(format!(
                        "symbol `{sym_name}` in {in_sec} is neither a map, global data, code nor an extern"
                    )));
                    continue;
                };
                obj.sections[pos].relocs.insert(insn, target);
            }
        }
        Ok(obj)
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
            read_only: true,
        });
        self.maps.len() - 1
    }

    /// Programs are the global functions of every code section but `.text` (libbpf's rule). Old objects without
    /// function symbols get one program per section, named after it.
    fn find_programs(&mut self) {
        for (pos, cs) in self.sections.iter().enumerate() {
            if cs.name == ".text" {
                continue;
            }
            let info = section::classify(&cs.name);
            let globals: Vec<&Func> = cs.funcs.iter().filter(|f| f.global).collect();
            let entries: Vec<&Func> = if globals.is_empty() { cs.funcs.iter().collect() } else { globals };
            if entries.is_empty() {
                self.programs.push(ProgramEntry { name: cs.name.clone(), section: pos, start: 0, info });
                continue;
            }
            for f in entries {
                self.programs.push(ProgramEntry {
                    name: f.name.clone(),
                    section: pos,
                    start: f.start,
                    info: info.clone(),
                });
            }
        }
    }

    /// `struct bpf_map_def` (5 or more u32) or iproute2's `struct bpf_elf_map` (9 u32, pinning at word 6).
    fn read_legacy_maps(
        &mut self,
        file: &ElfFile64<Endianness>,
        idx: SectionIndex,
        map_syms: &mut HashMap<usize, usize>,
    ) {
        let Ok(sec) = file.section_by_index(idx) else { return };
        let section = sec.name().unwrap_or("maps").to_owned();
        let data = match sec.data() {
            Ok(d) => d,
            Err(source) => return self.errors.push(ElfError::SectionData { section, source }),
        };
        let mut syms: Vec<(u64, u64, String, usize)> = file
            .symbols()
            .filter(|s| s.section_index() == Some(idx) && s.kind() != SymbolKind::Section)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned(), s.index().0)))
            .collect();
        syms.sort();
        if syms.is_empty() {
            return;
        }
        let even_share = data.len() / syms.len();
        let little_endian = self.little_endian;
        for (addr, size, name, sym_idx) in syms {
            // A linker may leave gaps, so a symbol's own size wins over an even share of the section.
            let def_size = if size > 0 { usize::try_from(size).unwrap_or(usize::MAX) } else { even_share };
            let iproute2 = def_size == 36;
            let word = |i: usize| -> Option<u32> {
                let at = usize::try_from(addr).ok()?.checked_add(i * 4)?;
                let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
                Some(if little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
            };
            let fields = (word(0), word(1), word(2), word(3), word(4));
            let (Some(map_type), Some(key_size), Some(value_size), Some(max_entries), Some(flags)) = fields else {
                self.errors.push(ElfError::BadMap {
                    section: section.clone(),
                    map: name,
                    reason: format!("definition at byte {addr} is shorter than struct bpf_map_def"),
                });
                continue;
            };
            // libbpf refuses definitions with fields it does not know about, unless they are zero.
            let known = if iproute2 { 36 } else { 20 };
            let extra = usize::try_from(addr)
                .ok()
                .and_then(|a| data.get(a.checked_add(known)?..a.checked_add(def_size.max(known))?));
            if extra.is_some_and(|b| b.iter().any(|&x| x != 0)) {
                self.errors.push(ElfError::BadMap {
                    section: section.clone(),
                    map: name,
                    reason: format!("definition has {def_size} bytes with unknown non-zero fields past byte {known}"),
                });
                continue;
            }
            let pinning = if iproute2 { word(6).unwrap_or(0) } else { 0 };
            map_syms.insert(sym_idx, self.maps.len());
            self.maps.push(MapDef {
                name,
                kind: if iproute2 { MapKind::Iproute2 } else { MapKind::Legacy },
                map_type,
                key_size,
                value_size,
                max_entries,
                flags,
                pinning,
                read_only: false,
            });
        }
    }

    fn read_btf_maps(
        &mut self,
        file: &ElfFile64<Endianness>,
        idx: SectionIndex,
        btf: Option<&Btf>,
        map_syms: &mut HashMap<usize, usize>,
    ) {
        let Some(btf) = btf else {
            return self.errors.push(ElfError::BadMap {
                section: ".maps".into(),
                map: "*".into(),
                reason: "BTF-defined maps need a .BTF section, and it is missing or unreadable".into(),
            });
        };
        let defs = match btf.btf_map_defs() {
            Ok(d) => d,
            Err(e) => return self.errors.push(e.into()),
        };
        let mut by_name = HashMap::new();
        for d in defs {
            by_name.insert(d.name.clone(), self.maps.len());
            self.maps.push(MapDef {
                name: d.name,
                kind: MapKind::Btf,
                map_type: d.map_type,
                key_size: d.key_size,
                value_size: d.value_size,
                max_entries: d.max_entries,
                flags: d.flags,
                pinning: d.pinning,
                read_only: false,
            });
        }
        let mut extents = Vec::new();
        for s in file.symbols().filter(|s| s.section_index() == Some(idx) && s.kind() != SymbolKind::Section) {
            let Ok(name) = s.name() else { continue };
            match by_name.get(name) {
                Some(&map) => {
                    map_syms.insert(s.index().0, map);
                    extents.push((s.address(), s.address().saturating_add(s.size()), map));
                }
                None => self.errors.push(ElfError::BadMap {
                    section: ".maps".into(),
                    map: name.into(),
                    reason: "symbol has no BTF map definition".into(),
                }),
            }
        }
        // BTF carries the whole definition; the section itself must be zeros (loaders reject anything else).
        if let Ok(data) = file.section_by_index(idx).and_then(|s| s.data()) {
            for &(start, end, map) in &extents {
                let bytes =
                    usize::try_from(start).ok().zip(usize::try_from(end).ok()).and_then(|(a, b)| data.get(a..b));
                if bytes.is_some_and(|b| b.iter().any(|&x| x != 0)) {
                    self.errors.push(ElfError::BadMap {
                        section: ".maps".into(),
                        map: self.maps.get(map).map(|m| m.name.clone()).unwrap_or_default(),
                        reason: format!("definition at byte {start} has non-zero data; BTF-defined maps must be zero"),
                    });
                }
            }
        }
        // Relocations in .maps initialize `values`: only prog arrays and map-in-map types have them.
        if let Ok(sec) = file.section_by_index(idx) {
            for (offset, _) in sec.relocations() {
                let map = extents.iter().find(|(a, b, _)| (*a..*b).contains(&offset)).map(|e| e.2);
                let ok = map.and_then(|m| self.maps.get(m)).is_some_and(|m| {
                    matches!(m.map_type, MAP_TYPE_PROG_ARRAY | MAP_TYPE_ARRAY_OF_MAPS | MAP_TYPE_HASH_OF_MAPS)
                });
                if !ok {
                    let name = map.and_then(|m| self.maps.get(m)).map(|m| m.name.clone()).unwrap_or_else(|| "?".into());
                    self.errors.push(ElfError::BadMap {
                        section: ".maps".into(),
                        map: name,
                        reason: format!(
                            "initial value at byte {offset}: only prog arrays and maps of maps can be initialized"
                        ),
                    });
                }
            }
        }
    }
}

impl Object {
    /// The instruction at `insn` of code section `section`, in the kernel's notation, with helper and
    /// relocation names; `None` when there is no such instruction or it does not decode.
    pub fn disassemble(&self, section: &str, insn: usize) -> Option<String> {
        struct Catalogue;
        impl crate::insn::Names for Catalogue {
            fn helper(&self, id: u32) -> Option<&str> {
                crate::helpers::helper(id).map(|h| h.name)
            }
        }
        let cs = self.sections.iter().find(|c| c.name == section)?;
        let op = crate::insn::decode(cs.insns.get(insn..)?).ok()?;
        let reloc = cs.relocs.get(&insn).map(|r| match r {
            RelocTarget::Map(m) | RelocTarget::MapValue { map: m, .. } => {
                self.maps.get(*m).map(|m| m.name.clone()).unwrap_or_default()
            }
            RelocTarget::Code { symbol, .. } => symbol.clone(),
            RelocTarget::Extern { name } => name.clone(),
        });
        Some(crate::insn::Display { op: &op, names: &Catalogue, reloc: reloc.as_deref() }.to_string())
    }
}
