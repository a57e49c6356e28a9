//! A writer of relocatable ELF64 objects for EM_BPF, built byte by byte so that it can break every rule a linker
//! keeps: extended section numbering, names without terminators, relocations of anything, either byte order.

use crate::insn::{encode, Insn};

pub const SHT_PROGBITS: u32 = 1;
pub const SHT_SYMTAB: u32 = 2;
pub const SHT_STRTAB: u32 = 3;
pub const SHT_REL: u32 = 9;
pub const SHT_SYMTAB_SHNDX: u32 = 18;
pub const SHF_WRITE: u64 = 1;
pub const SHF_ALLOC: u64 = 2;
pub const SHF_EXECINSTR: u64 = 4;
/// Section indices from here on need ELF extended numbering (`SHN_LORESERVE`).
pub const SHN_LORESERVE: u32 = 0xff00;
const SHN_XINDEX: u16 = 0xffff;
pub const STT_NOTYPE: u8 = 0;
pub const STT_OBJECT: u8 = 1;
pub const STT_FUNC: u8 = 2;
pub const STB_GLOBAL: u8 = 1 << 4;
/// `R_BPF_64_64`: an `ld_imm64` of a map or global; `R_BPF_64_32`: a call.
pub const R_BPF_64_64: u32 = 1;
pub const R_BPF_64_32: u32 = 10;
const EM_BPF: u16 = 247;

#[derive(Clone, Copy)]
enum Link {
    None,
    Symtab,
}

struct Sec {
    name: u32,
    typ: u32,
    flags: u64,
    data: Vec<u8>,
    link: Link,
    info: u32,
    entsize: u64,
}

struct Sym {
    name: u32,
    info: u8,
    shndx: u32,
    value: u64,
    size: u64,
}

/// Bytes in the object's byte order.
struct Out {
    buf: Vec<u8>,
    le: bool,
}

impl Out {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn align8(&mut self) {
        while !self.buf.len().is_multiple_of(8) {
            self.buf.push(0);
        }
    }
}

/// A relocatable ELF64 object for EM_BPF, little-endian unless made with [`Elf::with_byte_order`]. Sections are
/// numbered from 1 in the order they are added; `.symtab`, `.symtab_shndx` (when a symbol needs it), `.strtab`
/// and `.shstrtab` come last. More than `SHN_LORESERVE` sections switch to extended numbering (`e_shnum` 0, the
/// count in section 0's `sh_size`).
pub struct Elf {
    little_endian: bool,
    secs: Vec<Sec>,
    syms: Vec<Sym>,
    strtab: Vec<u8>,
    shstrtab: Vec<u8>,
}

impl Default for Elf {
    fn default() -> Self {
        Elf::new()
    }
}

impl Elf {
    /// A little-endian object.
    pub fn new() -> Elf {
        Elf::with_byte_order(true)
    }

    pub fn with_byte_order(little_endian: bool) -> Elf {
        Elf { little_endian, secs: Vec::new(), syms: Vec::new(), strtab: vec![0], shstrtab: vec![0] }
    }

    fn out(&self, buf: Vec<u8>) -> Out {
        Out { buf, le: self.little_endian }
    }

    /// Adds `bytes` to `.strtab` as they are (no terminator): the offset of the first.
    pub fn strtab_raw(&mut self, bytes: &[u8]) -> u32 {
        let off = self.strtab.len() as u32;
        self.strtab.extend_from_slice(bytes);
        off
    }
    /// Adds a NUL-terminated name to `.strtab`.
    pub fn str(&mut self, name: &[u8]) -> u32 {
        let off = self.strtab_raw(name);
        self.strtab.push(0);
        off
    }
    /// Adds `bytes` to `.shstrtab` as they are.
    pub fn shstrtab_raw(&mut self, bytes: &[u8]) -> u32 {
        let off = self.shstrtab.len() as u32;
        self.shstrtab.extend_from_slice(bytes);
        off
    }
    fn shstr(&mut self, name: &[u8]) -> u32 {
        let off = self.shstrtab_raw(name);
        self.shstrtab.push(0);
        off
    }

    /// A section named by an offset into `.shstrtab`: its index.
    pub fn section_at(&mut self, name: u32, typ: u32, flags: u64, data: Vec<u8>) -> u32 {
        self.secs.push(Sec { name, typ, flags, data, link: Link::None, info: 0, entsize: 0 });
        self.secs.len() as u32
    }
    pub fn section(&mut self, name: &str, typ: u32, flags: u64, data: Vec<u8>) -> u32 {
        let off = self.shstr(name.as_bytes());
        self.section_at(off, typ, flags, data)
    }
    /// An executable section holding `insns`, in the object's byte order.
    pub fn code(&mut self, name: &str, insns: &[Insn]) -> u32 {
        self.code_bytes(name, encode(insns, self.little_endian))
    }
    /// An executable section holding `bytes` as they are (whole instructions or not).
    pub fn code_bytes(&mut self, name: &str, bytes: Vec<u8>) -> u32 {
        self.section(name, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, bytes)
    }
    /// A `.rel<target>` section: `(byte offset, symbol index, type)` each.
    pub fn rel(&mut self, target: u32, relocs: impl IntoIterator<Item = (u64, u32, u32)>) -> u32 {
        let mut data = self.out(Vec::new());
        for (offset, sym, typ) in relocs {
            data.u64(offset);
            data.u64((u64::from(sym) << 32) | u64::from(typ));
        }
        let name = self.shstr(format!(".rel{target}").as_bytes());
        self.secs.push(Sec {
            name,
            typ: SHT_REL,
            flags: 0,
            data: data.buf,
            link: Link::Symtab,
            info: target,
            entsize: 16,
        });
        self.secs.len() as u32
    }
    /// The license section every GPL-only helper needs.
    pub fn license(&mut self) -> u32 {
        self.section("license", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, b"GPL\0".to_vec())
    }
    /// A `.BTF` section holding `blob` (see [`crate::btf::Btf`]).
    pub fn btf(&mut self, blob: Vec<u8>) -> u32 {
        self.section(".BTF", SHT_PROGBITS, 0, blob)
    }

    /// A symbol named by a `.strtab` offset: its index (the null symbol is 0).
    pub fn symbol_at(&mut self, name: u32, info: u8, shndx: u32, value: u64, size: u64) -> u32 {
        self.syms.push(Sym { name, info, shndx, value, size });
        self.syms.len() as u32
    }
    pub fn symbol(&mut self, name: &str, info: u8, shndx: u32, value: u64, size: u64) -> u32 {
        let off = self.str(name.as_bytes());
        self.symbol_at(off, info, shndx, value, size)
    }
    /// A global function of `len` instructions at instruction `start` of section `shndx`.
    pub fn func(&mut self, name: &str, shndx: u32, start: usize, len: usize) -> u32 {
        self.symbol(name, STB_GLOBAL | STT_FUNC, shndx, start as u64 * 8, len as u64 * 8)
    }

    /// A little-endian object with a license and one code section holding `code`, whose first `len` instructions
    /// are the function `func`; returns it with the section's index for more symbols and relocations.
    pub fn program(section: &str, func: &str, code: &[Insn], len: usize) -> (Elf, u32) {
        let mut e = Elf::new();
        e.license();
        let s = e.code(section, code);
        e.func(func, s, 0, len);
        (e, s)
    }

    /// The object's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let xindex = self.syms.iter().any(|s| s.shndx >= SHN_LORESERVE);
        let n_user = self.secs.len() as u32;
        let symtab_idx = n_user + 1;
        let strtab_idx = symtab_idx + 1 + u32::from(xindex);
        let shstrtab_idx = strtab_idx + 1;

        let mut symtab = self.out(vec![0u8; 24]);
        let mut shndx_tab = self.out(vec![0u8; 4]);
        for s in &self.syms {
            symtab.u32(s.name);
            symtab.buf.push(s.info);
            symtab.buf.push(0);
            symtab.u16(if s.shndx >= SHN_LORESERVE { SHN_XINDEX } else { s.shndx as u16 });
            symtab.u64(s.value);
            symtab.u64(s.size);
            shndx_tab.u32(if s.shndx >= SHN_LORESERVE { s.shndx } else { 0 });
        }
        // ELF wants local symbols first; sh_info is the first non-local one.
        let first_global = self.syms.iter().position(|s| s.info >> 4 != 0).map_or(self.syms.len(), |i| i) + 1;
        let name = self.shstr(b".symtab");
        let strtab = std::mem::take(&mut self.strtab);
        self.secs.push(Sec {
            name,
            typ: SHT_SYMTAB,
            flags: 0,
            data: symtab.buf,
            link: Link::None,
            info: first_global as u32,
            entsize: 24,
        });
        if xindex {
            let name = self.shstr(b".symtab_shndx");
            self.secs.push(Sec {
                name,
                typ: SHT_SYMTAB_SHNDX,
                flags: 0,
                data: shndx_tab.buf,
                link: Link::Symtab,
                info: 0,
                entsize: 4,
            });
        }
        let name = self.shstr(b".strtab");
        self.secs.push(Sec { name, typ: SHT_STRTAB, flags: 0, data: strtab, link: Link::None, info: 0, entsize: 0 });
        let name = self.shstr(b".shstrtab");
        let shstrtab = std::mem::take(&mut self.shstrtab);
        self.secs.push(Sec { name, typ: SHT_STRTAB, flags: 0, data: shstrtab, link: Link::None, info: 0, entsize: 0 });

        let symtab_link = strtab_idx;
        let count = self.secs.len() + 1;
        let mut out = self.out(vec![0u8; 64]);
        let mut offsets = Vec::with_capacity(self.secs.len());
        for s in &self.secs {
            out.align8();
            offsets.push(out.buf.len() as u64);
            out.buf.extend_from_slice(&s.data);
        }
        out.align8();
        let shoff = out.buf.len() as u64;
        let extended = count >= SHN_LORESERVE as usize;
        let big_shstrndx = shstrtab_idx >= SHN_LORESERVE;
        // Section 0 holds the real count and string table index when they do not fit the header.
        out.u64(0); // sh_name, sh_type
        out.u64(0); // sh_flags
        out.u64(0); // sh_addr
        out.u64(0); // sh_offset
        out.u64(if extended { count as u64 } else { 0 }); // sh_size
        out.u32(if big_shstrndx { shstrtab_idx } else { 0 }); // sh_link
        out.buf.extend_from_slice(&[0; 20]); // sh_info, sh_addralign, sh_entsize
        for (s, off) in self.secs.iter().zip(offsets) {
            let link = match (s.typ, s.link) {
                (SHT_SYMTAB, _) => symtab_link,
                (_, Link::Symtab) => symtab_idx,
                (_, Link::None) => 0,
            };
            out.u32(s.name);
            out.u32(s.typ);
            out.u64(s.flags);
            out.u64(0); // sh_addr
            out.u64(off);
            out.u64(s.data.len() as u64);
            out.u32(link);
            out.u32(s.info);
            out.u64(8); // sh_addralign
            out.u64(s.entsize);
        }
        let mut h = self.out(vec![0x7f, b'E', b'L', b'F', 2, if self.little_endian { 1 } else { 2 }, 1, 0]);
        h.buf.extend_from_slice(&[0; 8]);
        h.u16(1); // ET_REL
        h.u16(EM_BPF);
        h.u32(1); // EV_CURRENT
        h.u64(0); // e_entry
        h.u64(0); // e_phoff
        h.u64(shoff);
        h.u32(0); // e_flags
        h.u16(64); // e_ehsize
        h.u16(0); // e_phentsize
        h.u16(0); // e_phnum
        h.u16(64); // e_shentsize
        h.u16(if extended { 0 } else { count as u16 });
        h.u16(if big_shstrndx { SHN_XINDEX } else { shstrtab_idx as u16 });
        out.buf[..64].copy_from_slice(&h.buf);
        out.buf
    }
}
