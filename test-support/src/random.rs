//! Random BPF programs from a seed, for differential tests of the gate's scan against the library's model of it
//! (`bpfgate::kernel_view`): the same program as an object for the library and as the instructions a loader
//! submits to the kernel.
//!
//! A program is a list of functions, each a list of [`Item`]s (one instruction, or one with a symbolic target:
//! a jump to another item of its function, a call or a function's address, a map reference). [`Program::link`]
//! lays the functions out as libbpf does, each where it is first referred to, depth first from the entry
//! function, without the ones nothing refers to; the object keeps them in that order in one section, so the
//! library's layout and the kernel's instructions are the same. Most programs do not pass the verifier: the gate
//! scans before it does.
//!
//! What the items exercise is what the scan tracks: ALU on scalars and pointers, context loads (packet pointer
//! fields included), frame stores and loads through r10 of every size, aligned and not, at the frame's edges,
//! pointers spilled, partly overwritten and filled back, stores and loads through other registers, map
//! references (a map and a global variable, both relocated against definitions in the object, so that the
//! library knows they hold no kptrs), helper and kfunc calls with their arguments set up, atomics, forward and
//! backward jumps, subprogram calls and callbacks; programs long enough to cross the scan's 64-instruction chunks
//! and to fill its 32-entry table of pending forward jumps. Half the programs leave out what makes every tag
//! unknown (backward jumps, subprograms, calls of anything), so that a slip in following precise tags shows.
//! Not generated: what the library does not decode (gotox) or cannot judge as the kernel does (a real kfunc by
//! its BTF id alone, a map by its fd alone, which it must take as possibly holding kptrs).

use crate::elf::{
    Elf, R_BPF_64_32, R_BPF_64_64, SHF_ALLOC, SHF_WRITE, SHT_PROGBITS, STB_GLOBAL, STT_NOTYPE, STT_OBJECT,
};
use crate::insn::{self, insn, ld_imm64, op, Insn};

/// A seed or count as written on a command line or in the environment: decimal, or hex after `0x`.
pub fn parse_number(s: &str) -> Result<u64, std::num::ParseIntError> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

/// splitmix64: small, and the same sequence on every host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// A program type as a loader submits it: the section name the library reads it from, and the kernel's
/// `BPF_PROG_TYPE_*` and `BPF_*` attach type numbers (uapi `linux/bpf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub section: &'static str,
    pub prog_type: u32,
    pub attach_type: u32,
    /// Context offsets of packet pointers (`data`, `data_meta`), which the generator loads often.
    pub packet_fields: &'static [i16],
    /// The vmlinux function a tracing or lsm program names by BTF id at load (its context is BTF-typed).
    pub btf_func: Option<&'static str>,
}

const fn kind(section: &'static str, prog_type: u32, attach_type: u32, packet_fields: &'static [i16]) -> Kind {
    Kind { section, prog_type, attach_type, packet_fields, btf_func: None }
}

/// The program types generated, each as likely.
pub const KINDS: &[Kind] = &[
    kind("kprobe/do_nanosleep", 2, 0, &[]),
    kind("socket", 1, 0, &[76, 140]),
    kind("tc", 3, 0, &[76, 140]),
    kind("action", 4, 0, &[76, 140]),
    kind("xdp", 6, 37, &[0, 8]),
    kind("tracepoint/syscalls/sys_enter_nanosleep", 5, 0, &[]),
    kind("cgroup_skb/ingress", 8, 0, &[76, 140]),
    kind("sk_msg", 16, 7, &[0]),
    kind("cgroup/getsockopt", 25, 21, &[8]),
    kind("lwt_in", 10, 0, &[76, 140]),
    kind("sk_skb", 14, 0, &[76, 140]),
    kind("flow_dissector", 22, 17, &[76, 140]),
    Kind { btf_func: Some("do_nanosleep"), ..kind("fentry/do_nanosleep", 26, 24, &[]) },
    Kind { btf_func: Some("do_nanosleep"), ..kind("fexit/do_nanosleep", 26, 25, &[]) },
    // override_return for every program of the type.
    Kind { btf_func: Some("do_nanosleep"), ..kind("fmod_ret/do_nanosleep", 26, 26, &[]) },
    Kind { btf_func: Some("bpf_lsm_file_open"), ..kind("lsm/file_open", 29, 27, &[]) },
];

/// The map every map reference names: a `maps` section definition in the object, an fd in the kernel.
pub const MAP_NAME: &str = "dmap";
/// The global variable (`.data`) map-value references name.
pub const DATA_NAME: &str = "dvar";

/// One instruction of a function, or one whose target is known only once the program is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Insn(Insn),
    /// An `ld_imm64` (dst, src, imm) of a constant, or of a BTF id: no relocation.
    Wide(u8, u8, i32),
    /// A jump (its `off`, or `imm` for `ja32`, set at layout) to item `to` of the same function.
    Jump(Insn, usize),
    /// A call of function `f` (of the program's list; 0 is the entry function, never called).
    Call(usize),
    /// `dst = &f`: `ld_imm64` with `BPF_PSEUDO_FUNC`.
    FuncAddr(u8, usize),
    /// `dst = map`, relocated against [`MAP_NAME`].
    Map(u8),
    /// `dst = &variable`, relocated against [`DATA_NAME`]: a map value.
    MapValue(u8),
    /// A call of the kfunc of this name (vmlinux's or a module's): by BTF id and fd_array index in the kernel,
    /// relocated against the name in the object.
    Kfunc(&'static str),
}

impl Item {
    fn slots(self) -> usize {
        match self {
            Item::Wide(..) | Item::FuncAddr(..) | Item::Map(_) | Item::MapValue(_) => 2,
            _ => 1,
        }
    }
}

/// A generated program: its kind and functions (the entry function first).
#[derive(Clone, Debug)]
pub struct Program {
    pub kind: Kind,
    pub funcs: Vec<Vec<Item>>,
}

/// How the kernel's copy of a program names the map its references are relocated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRef {
    /// By fd (`BPF_PSEUDO_MAP_FD`, `BPF_PSEUDO_MAP_VALUE`), as libbpf loads.
    Fd(i32),
    /// By index into the load's fd_array (`BPF_PSEUDO_MAP_IDX`, `BPF_PSEUDO_MAP_IDX_VALUE`), as libbpf's light
    /// skeletons load.
    Index(i32),
}

/// A relocation of the laid-out code: the `ld_imm64` at an instruction refers to the map or the variable, or the
/// call there to a kfunc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloc {
    Map,
    Data,
    /// A kfunc call, against the kfunc's name.
    Kfunc(&'static str),
}

/// A program laid out: its instructions as the kernel gets them, where each function starts (in layout order),
/// and the relocations the object carries.
#[derive(Clone, Debug)]
pub struct Linked {
    pub insns: Vec<Insn>,
    pub funcs: Vec<(usize, usize)>,
    pub relocs: Vec<(usize, Reloc)>,
}

impl Program {
    /// A program of about `size` items (at least a few), from `rng`, calling some of `kfuncs` (kfuncs by name)
    /// among its calls.
    pub fn generate(rng: &mut Rng, size: usize, kfuncs: &[&'static str]) -> Program {
        let kind = rng.pick(KINDS);
        let wild = rng.chance(50);
        let subprograms = match if wild { rng.below(10) } else { 0 } {
            0..=4 => 0,
            5..=7 => 1,
            _ => rng.range(2, 3) as usize,
        };
        let nfuncs = 1 + subprograms;
        let mut funcs = Vec::with_capacity(nfuncs);
        for f in 0..nfuncs {
            let len = if f == 0 { size.max(2) } else { rng.range(2, 40) as usize };
            let mut g = Gen {
                rng: &mut *rng,
                kind,
                nfuncs,
                wild,
                kfuncs,
                items: Vec::with_capacity(len + 8),
                targets: Vec::new(),
            };
            g.body(f, len);
            funcs.push(g.finish());
        }
        Program { kind, funcs }
    }

    /// How many items there are (what [`Program::without`] indexes).
    pub fn len(&self) -> usize {
        self.funcs.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The program without items `from..to` (counted over every function in order), for shrinking. Each
    /// function's last item (its exit) stays; a jump to a dropped item goes to the next one kept.
    pub fn without(&self, from: usize, to: usize) -> Program {
        let mut base = 0;
        let funcs = self
            .funcs
            .iter()
            .map(|items| {
                let n = items.len();
                let drop = |k: usize| k + 1 < n && (from..to).contains(&(base + k));
                // An item's new index, or a dropped one's next kept item's: the items kept before it.
                let new_index: Vec<usize> = (0..n)
                    .scan(0, |kept, k| {
                        let at = *kept;
                        *kept += usize::from(!drop(k));
                        Some(at)
                    })
                    .collect();
                let out = items
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| !drop(k))
                    .map(|(_, &it)| match it {
                        Item::Jump(i, to) => Item::Jump(i, new_index[to]),
                        other => other,
                    })
                    .collect();
                base += n;
                out
            })
            .collect();
        Program { kind: self.kind, funcs }
    }

    /// The program laid out as libbpf would, its map references naming the map as `map` says, and `kfunc` giving
    /// each kfunc's BTF id and the fd_array index of its BTF object (0: vmlinux).
    pub fn link(&self, map: MapRef, kfunc: &dyn Fn(&str) -> (i32, i16)) -> Linked {
        let (map_src, value_src, map_imm) = match map {
            MapRef::Fd(fd) => (op::PSEUDO_MAP_FD, op::PSEUDO_MAP_VALUE, fd),
            MapRef::Index(i) => (op::PSEUDO_MAP_IDX, op::PSEUDO_MAP_IDX_VALUE, i),
        };
        // Depth first from the entry function: a function goes where it is first referred to.
        let mut order = vec![0];
        let mut placed = vec![false; self.funcs.len()];
        placed[0] = true;
        self.place(0, &mut order, &mut placed);
        let mut start = vec![usize::MAX; self.funcs.len()];
        let mut at = 0;
        let mut funcs = Vec::with_capacity(order.len());
        for &f in &order {
            let len: usize = self.funcs[f].iter().map(|i| i.slots()).sum();
            start[f] = at;
            funcs.push((at, len));
            at += len;
        }
        let mut insns = Vec::with_capacity(at);
        let mut relocs = Vec::new();
        for &f in &order {
            let items = &self.funcs[f];
            let mut index = Vec::with_capacity(items.len());
            let mut pos = start[f];
            for it in items {
                index.push(pos);
                pos += it.slots();
            }
            for (k, &it) in items.iter().enumerate() {
                let here = index[k] as i64;
                let rel = |to: usize| (to as i64 - here - 1) as i32;
                match it {
                    Item::Insn(i) => insns.push(i),
                    Item::Wide(dst, src, imm) => insns.extend(ld_imm64(dst, src, imm)),
                    Item::Jump(i, to) => {
                        let r = rel(index[to]);
                        insns.push(if i.code == op::JMP32 | op::JA {
                            insn(i.code, i.dst(), i.src(), 0, r)
                        } else {
                            insn(i.code, i.dst(), i.src(), r as i16, i.imm)
                        });
                    }
                    Item::Call(g) => insns.push(insn::call_local(rel(start[g]))),
                    Item::FuncAddr(dst, g) => insns.extend(ld_imm64(dst, op::PSEUDO_FUNC, rel(start[g]))),
                    Item::Map(dst) => {
                        relocs.push((insns.len(), Reloc::Map));
                        insns.extend(ld_imm64(dst, map_src, map_imm));
                    }
                    Item::MapValue(dst) => {
                        relocs.push((insns.len(), Reloc::Data));
                        insns.extend(ld_imm64(dst, value_src, map_imm));
                    }
                    Item::Kfunc(name) => {
                        relocs.push((insns.len(), Reloc::Kfunc(name)));
                        let (id, slot) = kfunc(name);
                        insns.push(insn::call_kfunc(id, slot));
                    }
                }
            }
        }
        Linked { insns, funcs, relocs }
    }

    fn place(&self, f: usize, order: &mut Vec<usize>, placed: &mut [bool]) {
        for it in &self.funcs[f] {
            if let Item::Call(g) | Item::FuncAddr(_, g) = *it {
                if !placed[g] {
                    placed[g] = true;
                    order.push(g);
                    self.place(g, order, placed);
                }
            }
        }
    }

    /// The object a loader would read the program `name` from: one code section of the kind's name with the
    /// laid-out functions (`name`, then `name_1`, ...), the map definition (legacy `maps` section: an array, no
    /// kptrs) and a `.data` variable, and the relocations of their references. What the loader fills in is as
    /// libbpf's object reader leaves it: a kfunc call's fd_array index 0, map references by fd.
    pub fn object(&self, name: &str, linked: &Linked) -> Vec<u8> {
        let (main_len, rest) = linked.funcs.split_first().map_or((0, &[][..]), |(&(_, len), rest)| (len, rest));
        let mut insns = linked.insns.clone();
        for &(at, r) in &linked.relocs {
            let Some(i) = insns.get_mut(at) else { continue };
            match r {
                Reloc::Kfunc(_) => i.off = 0,
                Reloc::Map => *i = insn::insn(i.code, i.dst(), op::PSEUDO_MAP_FD, i.off, i.imm),
                Reloc::Data => *i = insn::insn(i.code, i.dst(), op::PSEUDO_MAP_VALUE, i.off, i.imm),
            }
        }
        let (mut e, code) = Elf::program(self.kind.section, name, &insns, main_len);
        for (k, &(start, len)) in rest.iter().enumerate() {
            e.func(&format!("{name}_{}", k + 1), code, start, len);
        }
        // struct bpf_map_def: array, 4-byte key, 64-byte value, one entry, no flags.
        let def: Vec<u8> = [2u32, 4, 64, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
        let maps = e.section("maps", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, def);
        let map = e.symbol(MAP_NAME, STB_GLOBAL | STT_OBJECT, maps, 0, 20);
        let data = e.section(".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, vec![0; 64]);
        let var = e.symbol(DATA_NAME, STB_GLOBAL | STT_OBJECT, data, 0, 8);
        // Each kfunc an undefined symbol, as clang leaves an extern.
        let mut externs: Vec<(&str, u32)> = Vec::new();
        let mut relocs = Vec::with_capacity(linked.relocs.len());
        for &(at, r) in &linked.relocs {
            let (sym, typ) = match r {
                Reloc::Map => (map, R_BPF_64_64),
                Reloc::Data => (var, R_BPF_64_64),
                Reloc::Kfunc(name) => match externs.iter().find(|(n, _)| *n == name) {
                    Some(&(_, sym)) => (sym, R_BPF_64_32),
                    None => {
                        let sym = e.symbol(name, STB_GLOBAL | STT_NOTYPE, 0, 0, 0);
                        externs.push((name, sym));
                        (sym, R_BPF_64_32)
                    }
                },
            };
            relocs.push((at as u64 * 8, sym, typ));
        }
        if !relocs.is_empty() {
            e.rel(code, relocs);
        }
        e.finish()
    }
}

/// Registers the generator favours, so that what one item puts in a register the next ones use.
const REGS: &[u8] = &[0, 1, 2, 3, 6, 7, 8];

/// Helpers worth calling often: a map lookup (a map value in r0), writers through an argument, BTF pointer
/// returns, classes proved by the call; any other id comes up too.
const HELPERS: &[i32] =
    &[1, 1, 1, 2, 3, 4, 5, 6, 12, 14, 16, 26, 35, 51, 67, 88, 109, 113, 113, 115, 136, 153, 158, 158];
/// Helpers that run a callback (its address in r2, or r3 for find_vma).
const CALLBACK_HELPERS: &[i32] = &[181, 181, 164, 170, 180];

struct Gen<'a> {
    rng: &'a mut Rng,
    kind: Kind,
    nfuncs: usize,
    /// Backward jumps, subprograms and callbacks, calls of anything, r10 changed: what makes tags unknown. Without
    /// them the tags stay precise, and a slip in following them shows in the classes.
    wild: bool,
    kfuncs: &'a [&'static str],
    items: Vec<Item>,
    /// Jumps waiting for a target: (item index of the jump, how far ahead in items).
    targets: Vec<(usize, usize)>,
}

impl Gen<'_> {
    fn push(&mut self, i: Insn) {
        self.items.push(Item::Insn(i));
    }

    fn reg(&mut self) -> u8 {
        if self.rng.chance(85) {
            self.rng.pick(REGS)
        } else {
            self.rng.range(0, 9) as u8
        }
    }

    fn size(&mut self) -> u8 {
        self.rng.pick(&[op::B, op::H, op::W, op::DW, op::DW])
    }

    /// A frame offset: mostly the first slots, aligned or not, sometimes anywhere in the frame or at its edges.
    fn frame_off(&mut self) -> i16 {
        match self.rng.below(20) {
            0..=7 => -8 * self.rng.range(1, 8) as i16,
            8..=13 => -(self.rng.range(1, 64) as i16),
            14..=16 => -(self.rng.range(1, 512) as i16),
            _ => self.rng.pick(&[-512, -513, -516, -520, -509, -505, -504, -4, -2, -1, 0, 1, 4, 8]),
        }
    }

    fn body(&mut self, f: usize, len: usize) {
        // The context kept in r6, as compilers do.
        if f == 0 && self.rng.chance(70) {
            self.push(insn::mov(6, 1));
        }
        while self.items.len() < len {
            self.snippet(f);
        }
    }

    fn snippet(&mut self, f: usize) {
        let r = self.reg();
        let s = self.reg();
        match self.rng.below(110) {
            0..=11 => {
                let ops = [op::ADD, op::SUB, op::MUL, op::DIV, op::OR, op::AND, op::LSH, op::RSH, op::MOD, op::XOR];
                let o = self.rng.pick(&[&ops[..], &[op::MOV, op::ARSH, op::ADD, op::SUB, op::NEG, op::END]].concat());
                let class = if self.rng.chance(75) { op::ALU64 } else { op::ALU };
                let i = match o {
                    op::NEG => insn(class | o, r, 0, 0, 0),
                    // bswap (ALU64), to_le and to_be (ALU).
                    op::END => {
                        let x = if class == op::ALU && self.rng.chance(50) { op::X } else { op::K };
                        insn(class | o | x, r, 0, 0, self.rng.pick(&[16, 32, 64]))
                    }
                    _ if self.rng.chance(50) => insn(class | o | op::K, r, 0, 0, self.rng.range(-600, 600) as i32),
                    _ => {
                        let src = if self.rng.chance(15) { 10 } else { s };
                        insn(class | o | op::X, r, src, 0, 0)
                    }
                };
                self.push(i);
            }
            12..=19 => {
                // Moves carry pointers; movsx and the arena cast (off 1) sometimes.
                let src = self.rng.pick(&[s, s, s, 10, 1, 0]);
                let off = if self.rng.chance(8) { self.rng.pick(&[1, 8, 16, 32]) } else { 0 };
                self.push(insn(op::ALU64 | op::MOV | op::X, r, src, off, 0));
            }
            20..=23 => {
                let k = -(self.rng.range(0, 520) as i32);
                self.push(insn::mov(r, 10));
                self.push(insn::add_imm(r, k));
            }
            24..=31 => {
                let base = self.rng.pick(&[1, 6, 6, s]);
                let off = if !self.kind.packet_fields.is_empty() && self.rng.chance(60) {
                    self.rng.pick(self.kind.packet_fields)
                } else {
                    4 * self.rng.range(0, 40) as i16
                };
                let size = self.rng.pick(&[op::W, op::W, op::DW, op::H, op::B]);
                let mode = if size != op::DW && self.rng.chance(10) { op::MEMSX } else { op::MEM };
                self.push(insn(op::LDX | size | mode, r, base, off, 0));
            }
            32..=41 => {
                let off = self.frame_off();
                let size = self.size();
                let i = if self.rng.chance(25) {
                    insn::st_imm(size, 10, off, self.rng.range(-5, 5) as i32)
                } else {
                    insn::stx(size, 10, off, s)
                };
                self.push(i);
            }
            42..=48 => {
                let off = self.frame_off();
                let size = self.size();
                let mode = if size != op::DW && self.rng.chance(10) { op::MEMSX } else { op::MEM };
                self.push(insn(op::LDX | size | mode, r, 10, off, 0));
            }
            49..=53 => {
                let off = self.rng.range(-16, 16) as i16;
                let size = self.size();
                let i = if self.rng.chance(30) { insn::st_imm(size, r, off, 1) } else { insn::stx(size, r, off, s) };
                self.push(i);
            }
            54..=57 => {
                let off = self.rng.range(-16, 16) as i16;
                let size = self.size();
                self.push(insn::ldx(size, r, s, off));
            }
            58..=60 => {
                let it = if self.rng.chance(70) { Item::Map(r) } else { Item::MapValue(r) };
                self.items.push(it);
            }
            61..=64 => {
                // r0 = bpf_map_lookup_elem(map, r10 - k): a map value or null.
                self.items.push(Item::Map(1));
                self.push(insn::mov(2, 10));
                let k = -8 * self.rng.range(1, 8) as i32;
                self.push(insn::add_imm(2, k));
                self.push(insn::call_helper(1));
                if self.rng.chance(50) {
                    self.jump(insn::jeq_imm(0, 0, 0), 1, 3);
                }
            }
            65..=70 => {
                // Arguments from the registers the program filled, then the call.
                for a in 1..=self.rng.range(0, 3) as u8 {
                    let src = self.rng.pick(&[s, 0, 6, 10, 7]);
                    self.push(insn::mov(a, src));
                }
                if !self.kfuncs.is_empty() && self.rng.chance(20) {
                    let k = self.rng.pick(self.kfuncs);
                    self.items.push(Item::Kfunc(k));
                    return;
                }
                let id = match self.rng.below(if self.wild { 10 } else { 6 }) {
                    0..=5 => self.rng.pick(HELPERS),
                    6..=8 => self.rng.range(0, 215) as i32,
                    // Past every kernel's last helper, and libbpf's poison.
                    _ => self.rng.pick(&[212, 250, 0x0bad_2310, 2_001_000_003]),
                };
                self.push(insn::call_helper(id));
            }
            71..=80 => {
                let cond = [op::JEQ, op::JGT, op::JGE, op::JSET, op::JNE, op::JSGT, op::JSGE, op::JLT, op::JLE];
                let o = self.rng.pick(&cond);
                let class = if self.rng.chance(80) { op::JMP } else { op::JMP32 };
                let i = if self.rng.chance(60) {
                    insn(class | o | op::K, r, 0, 0, self.rng.range(-2, 2) as i32)
                } else {
                    insn(class | o | op::X, r, s, 0, 0)
                };
                self.jump_somewhere(i);
            }
            81..=83 => {
                let i = if self.rng.chance(85) { insn::ja(0) } else { insn(op::JMP32 | op::JA, 0, 0, 0, 0) };
                self.jump_somewhere(i);
            }
            84..=85 => {
                self.push(insn::mov_imm(0, 0));
                self.push(insn::exit());
            }
            86..=88 if self.wild && f + 1 < self.nfuncs => {
                // Calls go to later functions only: the kernel and the library refuse recursion.
                let g = self.rng.range(f as i64 + 1, self.nfuncs as i64 - 1) as usize;
                if self.rng.chance(50) {
                    self.push(insn::mov(1, s));
                }
                self.items.push(Item::Call(g));
            }
            89..=90 if self.wild && self.nfuncs > 1 => {
                // A callback: bpf_loop(n, &g, ctx, 0) and the like.
                let g = self.callee(f);
                let helper = self.rng.pick(CALLBACK_HELPERS);
                let reg = if helper == 180 { 3 } else { 2 };
                self.push(insn::mov_imm(1, 4));
                self.items.push(Item::FuncAddr(reg, g));
                let ctx = self.rng.pick(&[10, 0, 6, s]);
                self.push(insn::mov(if reg == 2 { 3 } else { 4 }, ctx));
                self.push(insn::call_helper(helper));
            }
            91..=94 => self.atomic(r, s),
            95 => {
                // LD_ABS, LD_IND.
                let i = if self.rng.chance(50) {
                    insn(op::LD | op::W | op::ABS, 0, 0, 0, 12)
                } else {
                    insn(op::LD | op::H | op::IND, 0, s, 0, 2)
                };
                self.push(i);
            }
            96 => {
                let src = self.rng.pick(&[0, 3]); // a constant, a BTF id
                let imm = self.rng.range(1, 1000) as i32;
                self.items.push(Item::Wide(r, src, imm));
            }
            97 if self.wild => {
                // r10 itself changed, or replaced: the frame's fast paths must notice.
                let i = match self.rng.below(3) {
                    0 => insn::add_imm(10, -8),
                    1 => insn::mov(10, s),
                    _ => insn::ldx_dw(10, s, 0),
                };
                self.push(i);
            }
            98..=99 if self.wild => {
                // Rare ones: callx, a kfunc by an id no kernel has (unknown to both sides), may_goto. (Not gotox: the
                // library does not decode it.)
                let i = match self.rng.below(3) {
                    0 => insn(op::JMP | op::CALL | op::X, r, 0, 0, 0),
                    1 => insn::call_kfunc(0x7fff_0000 + self.rng.range(0, 100) as i32, 0),
                    _ => {
                        self.jump_somewhere(insn(op::JMP | op::JCOND, 0, 0, 0, 0));
                        return;
                    }
                };
                self.push(i);
            }
            100..=109 => self.spill(r),
            _ => self.push(insn::mov_imm(r, 1)),
        }
    }

    /// A callback for function `f` to pass: often the next function (so that each is placed), any but the entry
    /// function otherwise (its own too: a callback is no recursive call).
    fn callee(&mut self, f: usize) -> usize {
        if f + 1 < self.nfuncs && self.rng.chance(60) {
            f + 1
        } else {
            self.rng.range(1, self.nfuncs as i64 - 1) as usize
        }
    }

    /// A pointer spilled to one of the first slots, perhaps partly overwritten there, filled back (from that slot
    /// or a neighbour) and stored or loaded through.
    fn spill(&mut self, r: u8) {
        let slot = -8 * self.rng.range(1, 4) as i16;
        let ptr = self.rng.pick(&[0, 0, 6, 7, r]);
        self.push(insn::stx_dw(10, slot, ptr));
        if self.rng.chance(70) {
            let off = slot + self.rng.range(-7, 7) as i16;
            let size = self.rng.pick(&[op::DW, op::DW, op::W, op::H, op::B]);
            let i = if self.rng.chance(30) { insn::st_imm(size, 10, off, 0) } else { insn::stx(size, 10, off, r) };
            self.push(i);
        }
        let from = if self.rng.chance(80) { slot } else { slot + self.rng.pick(&[-8, 8]) };
        let to = self.rng.pick(&[1, 2, 3, 8]);
        self.push(insn::ldx_dw(to, 10, from));
        match self.rng.below(10) {
            0..=5 => self.push(insn::st_imm(op::W, to, 0, 1)),
            6..=7 => self.push(insn::ldx(op::DW, 4, to, 0)),
            _ => {}
        }
    }

    fn atomic(&mut self, r: u8, s: u8) {
        // add, or, and, xor; fetch add and or; xchg, cmpxchg; load-acquire, store-release.
        let ops = [0x00, 0x40, 0x50, 0xa0, 0x01, 0x41, 0xe1, 0xf1, 0x100, 0x110];
        let o = self.rng.pick(&ops);
        let size = if o >= 0x100 { self.size() } else { self.rng.pick(&[op::W, op::DW]) };
        let (dst, off) = if self.rng.chance(50) { (10, self.frame_off()) } else { (r, self.rng.range(-8, 8) as i16) };
        self.push(insn(op::STX | size | op::ATOMIC, dst, s, off, o));
    }

    /// A jump from here: forward mostly, sometimes far (across chunks, into the join table's collisions), or back.
    fn jump_somewhere(&mut self, i: Insn) {
        match self.rng.below(if self.wild { 10 } else { 8 }) {
            0..=5 => self.jump(i, 1, 12),
            6..=7 => self.jump(i, 12, 200),
            _ => {
                let here = self.items.len();
                let to = if here == 0 { 0 } else { self.rng.below(here as u64) as usize };
                self.items.push(Item::Jump(i, to));
            }
        }
    }

    /// A forward jump over `lo..=hi` items (settled in [`Gen::finish`]).
    fn jump(&mut self, i: Insn, lo: usize, hi: usize) {
        let ahead = self.rng.range(lo as i64, hi as i64) as usize;
        self.targets.push((self.items.len(), ahead));
        self.items.push(Item::Jump(i, 0));
    }

    /// The function's items, ending in `r0 = 0; exit`, forward jumps pointed at their targets (the last item at
    /// most).
    fn finish(mut self) -> Vec<Item> {
        self.push(insn::mov_imm(0, 0));
        self.push(insn::exit());
        let last = self.items.len() - 1;
        for &(at, ahead) in &self.targets {
            if let Item::Jump(i, _) = self.items[at] {
                self.items[at] = Item::Jump(i, (at + 1 + ahead).min(last));
            }
        }
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_functions_where_first_referred_to() {
        let exit = Item::Insn(insn::exit());
        let p = Program {
            kind: KINDS[0],
            funcs: vec![
                vec![Item::Call(2), Item::Jump(insn::ja(0), 3), Item::FuncAddr(1, 1), exit],
                vec![exit],
                vec![Item::Call(3), exit],
                vec![exit],
                vec![exit], // nothing refers to it
            ],
        };
        let l = p.link(MapRef::Fd(7), &|_| (0, 0));
        // main (0..5), 2 at 5, 3 at 7 (from 2), 1 at 8.
        assert_eq!(l.funcs, vec![(0, 5), (5, 2), (7, 1), (8, 1)]);
        assert_eq!(l.insns[0], insn::call_local(4));
        assert_eq!(l.insns[1], insn::ja(2));
        assert_eq!(l.insns[2], insn(op::LD | op::DW, 1, op::PSEUDO_FUNC, 0, 5));
        assert_eq!(l.insns[5], insn::call_local(1));
    }

    #[test]
    fn without_keeps_exits_and_retargets_jumps() {
        let exit = Item::Insn(insn::exit());
        let nop = Item::Insn(insn::mov_imm(0, 0));
        let p = Program { kind: KINDS[0], funcs: vec![vec![Item::Jump(insn::ja(0), 2), nop, nop, exit]] };
        assert_eq!(p.without(1, 3).funcs, vec![vec![Item::Jump(insn::ja(0), 1), exit]]);
        assert_eq!(p.without(0, 4).funcs, vec![vec![exit]]);
        assert_eq!(p.without(2, 3).funcs, vec![vec![Item::Jump(insn::ja(0), 2), nop, exit]]);
    }

    #[test]
    fn same_seed_same_programs() {
        let gen = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| Program::generate(&mut rng, 50, &["k"]).link(MapRef::Fd(3), &|_| (9, 0)).insns)
                .collect::<Vec<_>>()
        };
        assert_eq!(gen(1), gen(1));
        assert_ne!(gen(1), gen(2));
    }
}
