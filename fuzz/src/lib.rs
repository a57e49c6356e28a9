//! Shared pieces of the bpfgate fuzz targets: report invariants, a tiny ELF64 writer for BPF objects, and (in
//! [`policy`]) the fixed programs, subjects and checks of the two policy targets.

pub mod policy;

use bpfgate::metadata::{from_cbor, to_cbor};
use bpfgate::{ObjectReport, ProgramMetadata};

/// Invariants every report must satisfy, whatever the input:
///
/// * every program's evidence offsets are below its `insn_count`, and so are tail call sites and subprogram
///   starts;
/// * `capabilities` are exactly the classes that have evidence, and every one has at least one instruction;
/// * the report round-trips through JSON (serde_json) and CBOR (`to_cbor` / `from_cbor`) to an equal value,
///   and so does each program's metadata on its own.
pub fn check_report(report: &ObjectReport) {
    for p in &report.programs {
        check_program(p);
    }
    let json = serde_json::to_string(report).expect("report encodes as JSON");
    let back: ObjectReport = serde_json::from_str(&json).expect("report JSON decodes");
    assert_eq!(&back, report, "JSON round trip changed the report");
    let cbor = to_cbor(report).expect("report encodes as CBOR");
    let back: ObjectReport = from_cbor(&cbor).expect("report CBOR decodes");
    assert_eq!(&back, report, "CBOR round trip changed the report");
}

/// The per-program part of [`check_report`].
pub fn check_program(p: &ProgramMetadata) {
    for (c, insns) in &p.evidence {
        assert!(!insns.is_empty(), "{}: capability {c} has an empty evidence list", p.name);
        assert!(p.capabilities.contains(c), "{}: evidence for {c}, which is not among the capabilities", p.name);
        for &i in insns {
            assert!(i < p.insn_count, "{}: evidence {i} for {c} is past insn_count {}", p.name, p.insn_count);
            // Every evidence instruction can be located in a section.
            let _ = p.locate(i);
        }
    }
    for c in &p.capabilities {
        assert!(p.evidence.get(c).is_some_and(|v| !v.is_empty()), "{}: capability {c} has no evidence", p.name);
    }
    for t in &p.tail_calls {
        assert!(t.insn < p.insn_count, "{}: tail call at {} is past insn_count {}", p.name, t.insn, p.insn_count);
    }
    for s in &p.subprograms {
        assert!(s.start < p.insn_count, "{}: subprogram {} starts past insn_count", p.name, s.name);
    }
    let cbor = to_cbor(p).expect("program encodes as CBOR");
    let back: ProgramMetadata = from_cbor(&cbor).expect("program CBOR decodes");
    assert_eq!(&back, p, "CBOR round trip changed the program metadata");
}

/// A minimal relocatable BPF ELF64 object: one executable section holding `code`, a global FUNC symbol `symbol`
/// at offset 0 covering the whole section, a `license` section, `.symtab`, `.strtab` and `.shstrtab`.
pub struct BpfElf<'a> {
    pub little_endian: bool,
    /// Name of the code section, which gives the program type (`kprobe/x`, `xdp`, ...).
    pub section: &'a str,
    /// Instruction bytes; a trailing partial instruction is dropped.
    pub code: &'a [u8],
    pub symbol: &'a str,
    pub license: &'a str,
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const EM_BPF: u16 = 247;

struct Out {
    buf: Vec<u8>,
    le: bool,
}

impl Out {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&if self.le { v.to_le_bytes() } else { v.to_be_bytes() });
    }
    fn align(&mut self, a: usize) {
        while self.buf.len() % a != 0 {
            self.buf.push(0);
        }
    }
    fn pos(&self) -> u64 {
        self.buf.len() as u64
    }
}

/// A string table; offset 0 is the empty string.
struct StrTab(Vec<u8>);

impl StrTab {
    fn new() -> StrTab {
        StrTab(vec![0])
    }
    fn add(&mut self, s: &str) -> u32 {
        let off = self.0.len() as u32;
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        off
    }
}

struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

impl BpfElf<'_> {
    /// The object's bytes.
    pub fn write(&self) -> Vec<u8> {
        let code = &self.code[..self.code.len() / 8 * 8];
        let mut shstr = StrTab::new();
        let mut str = StrTab::new();
        let n_code = shstr.add(self.section);
        let n_license = shstr.add("license");
        let n_symtab = shstr.add(".symtab");
        let n_strtab = shstr.add(".strtab");
        let n_shstrtab = shstr.add(".shstrtab");
        let sym_name = str.add(self.symbol);

        let mut o = Out { buf: Vec::new(), le: self.little_endian };
        o.buf.resize(64, 0); // header, written last
        let mut shdrs =
            vec![Shdr { name: 0, kind: 0, flags: 0, offset: 0, size: 0, link: 0, info: 0, align: 0, entsize: 0 }];

        o.align(8);
        let off = o.pos();
        o.buf.extend_from_slice(code);
        shdrs.push(Shdr {
            name: n_code,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_EXECINSTR,
            offset: off,
            size: code.len() as u64,
            link: 0,
            info: 0,
            align: 8,
            entsize: 0,
        });

        let off = o.pos();
        o.buf.extend_from_slice(self.license.as_bytes());
        o.u8(0);
        shdrs.push(Shdr {
            name: n_license,
            kind: SHT_PROGBITS,
            flags: SHF_ALLOC | SHF_WRITE,
            offset: off,
            size: self.license.len() as u64 + 1,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        });

        o.align(8);
        let off = o.pos();
        o.buf.extend_from_slice(&[0; 24]); // the null symbol
        o.u32(sym_name);
        o.u8(0x12); // STB_GLOBAL << 4 | STT_FUNC
        o.u8(0); // STV_DEFAULT
        o.u16(1); // the code section
        o.u64(0);
        o.u64(code.len() as u64);
        shdrs.push(Shdr {
            name: n_symtab,
            kind: SHT_SYMTAB,
            flags: 0,
            offset: off,
            size: 48,
            link: 4,
            info: 1,
            align: 8,
            entsize: 24,
        });

        for (name, tab) in [(n_strtab, &str), (n_shstrtab, &shstr)] {
            let off = o.pos();
            o.buf.extend_from_slice(&tab.0);
            shdrs.push(Shdr {
                name,
                kind: SHT_STRTAB,
                flags: 0,
                offset: off,
                size: tab.0.len() as u64,
                link: 0,
                info: 0,
                align: 1,
                entsize: 0,
            });
        }

        o.align(8);
        let shoff = o.pos();
        for s in &shdrs {
            o.u32(s.name);
            o.u32(s.kind);
            o.u64(s.flags);
            o.u64(0); // sh_addr
            o.u64(s.offset);
            o.u64(s.size);
            o.u32(s.link);
            o.u32(s.info);
            o.u64(s.align);
            o.u64(s.entsize);
        }

        let mut h = Out { buf: Vec::with_capacity(64), le: self.little_endian };
        h.buf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, if self.little_endian { 1 } else { 2 }, 1, 0]);
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
        h.u16(shdrs.len() as u16);
        h.u16(shdrs.len() as u16 - 1); // .shstrtab is last
        o.buf[..64].copy_from_slice(&h.buf);
        o.buf
    }
}

/// Encodes one instruction slot in the given byte order (the inverse of `RawInsn::parse`).
pub fn encode_insn(code: u8, dst: u8, src: u8, off: i16, imm: i32, little_endian: bool) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    if little_endian {
        b[1] = (src << 4) | (dst & 0xf);
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
    } else {
        b[1] = (dst << 4) | (src & 0xf);
        b[2..4].copy_from_slice(&off.to_be_bytes());
        b[4..8].copy_from_slice(&imm.to_be_bytes());
    }
    b
}
