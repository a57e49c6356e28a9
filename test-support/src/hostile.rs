//! Generators of hostile inputs for the resource-limit tests (`tests/integration/limits.rs`) and `cargo xtask
//! limits`: BPF ELF objects that break the rules a linker keeps, at sizes that try the analysis's limits, and
//! policy YAML.
//!
//! Each generator takes its size, so the tests run small or medium instances and the xtask the full ones.

use crate::elf::*;
use crate::insn::*;

/// `r0 = 0; exit`: the smallest program that analyzes.
pub fn ret0() -> [Insn; 2] {
    [mov_imm(0, 0), exit()]
}

/// `n` executable sections `kprobe/s<i>`, each one program with its own global symbol. Past 65,279 sections
/// the object needs extended numbering, and symbols of the later sections `SHN_XINDEX`.
pub fn many_sections(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    for i in 0..n {
        let s = e.code(&format!("kprobe/s{i}"), &ret0());
        e.func(&format!("p{i}"), s, 0, 2);
    }
    e.finish()
}

/// [`many_sections`] whose programs each call `bpf_trace_printk`: every program has a capability, which the
/// text report disassembles.
pub fn many_sections_printk(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let code = [mov_imm(1, 0), mov_imm(2, 0), call_helper(6), mov_imm(0, 0), exit()];
    for i in 0..n {
        let s = e.code(&format!("kprobe/s{i}"), &code);
        e.func(&format!("p{i}"), s, 0, code.len());
    }
    e.finish()
}

/// One small program and `n` object symbols in `.data`.
pub fn many_symbols(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let code = e.code("kprobe/x", &ret0());
    e.func("prog", code, 0, 2);
    let data = e.section(".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, vec![0u8; 8]);
    let name = e.str(b"v");
    for _ in 0..n {
        e.symbol_at(name, STT_OBJECT, data, 0, 8);
    }
    e.finish()
}

/// One section holding `n` programs of two instructions, each a global function.
pub fn many_programs(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let code: Vec<Insn> = (0..n).flat_map(|_| ret0()).collect();
    let s = e.code("kprobe/x", &code);
    for i in 0..n {
        e.func(&format!("p{i}"), s, 2 * i, 2);
    }
    e.finish()
}

/// `n` two-instruction programs in one section named `kprobe/` and 505 more bytes, all sharing one 512-byte
/// name: each program's report repeats both.
pub fn programs_long_names(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let code: Vec<Insn> = (0..n).flat_map(|_| ret0()).collect();
    let s = e.code(&format!("kprobe/{}", "s".repeat(505)), &code);
    let name = e.str(&[b'p'; 512]);
    for i in 0..n {
        e.symbol_at(name, STB_GLOBAL | STT_FUNC, s, 16 * i as u64, 16);
    }
    e.finish()
}

/// One program of exactly `n` instructions (n >= 2): straight-line code with a conditional branch every eight
/// instructions and stack traffic, so the analysis has blocks to join and slots to track.
pub fn long_program(n: usize) -> Vec<u8> {
    let mut code = Vec::with_capacity(n);
    code.push(mov_imm(0, 0));
    let body = [stx_dw(10, -8, 10), ldx_dw(1, 10, -8), add_imm(0, 1), jeq_imm(0, 7, 1), mov_imm(2, 3)];
    while code.len() + body.len() < n {
        code.extend(body);
    }
    while code.len() + 1 < n {
        code.push(mov_imm(2, 0));
    }
    code.push(exit());
    Elf::program("kprobe/long", "long", &code, n).0.finish()
}

/// `depth` + 1 functions in one section, each calling the next; the last returns. With `pointer`, the context
/// pointer is passed down and returned back up, so the result of every call changes when its callee's does.
pub fn call_chain(depth: usize, pointer: bool) -> Vec<u8> {
    let mut code = Vec::with_capacity(2 * depth + 2);
    for _ in 0..depth {
        code.extend([call_local(1), exit()]);
    }
    code.extend([if pointer { mov(0, 1) } else { mov_imm(0, 0) }, exit()]);
    let (mut e, s) = Elf::program("kprobe/chain", "chain", &code, 2);
    for i in 1..=depth {
        let f = e.str(format!("f{i}").as_bytes());
        e.symbol_at(f, STT_FUNC, s, 16 * i as u64, 16);
    }
    e.finish()
}

/// A program calling `n` distinct subprograms, each once (call depth 1).
pub fn fan_out(n: usize) -> Vec<u8> {
    let mut code = Vec::with_capacity(3 * n + 2);
    // Call k at instruction k targets subprogram k at `n + 2 + 2k`.
    for k in 0..n {
        code.push(call_local((n + 2 + 2 * k - k - 1) as i32));
    }
    code.extend([mov_imm(0, 0), exit()]);
    for _ in 0..n {
        code.extend(ret0());
    }
    let (mut e, s) = Elf::program("kprobe/fan", "fan", &code, n + 2);
    for k in 0..n {
        let f = e.str(format!("sub{k}").as_bytes());
        e.symbol_at(f, STT_FUNC, s, (8 * (n + 2 + 2 * k)) as u64, 16);
    }
    e.finish()
}

/// `len` functions calling each other in a ring: the last calls the first.
pub fn call_cycle(len: usize) -> Vec<u8> {
    let mut code = Vec::with_capacity(2 * len);
    for i in 0..len {
        let rel = if i + 1 == len { -(2 * i as i32) - 1 } else { 1 };
        code.extend([call_local(rel), exit()]);
    }
    let (mut e, s) = Elf::program("kprobe/cycle", "cycle", &code, 2);
    for i in 1..len {
        let f = e.str(format!("f{i}").as_bytes());
        e.symbol_at(f, STT_FUNC, s, 16 * i as u64, 16);
    }
    e.finish()
}

/// An object with a license and the program `r1 = imm64; r0 = 0; exit` in section `kprobe/x`, for relocations
/// on its `ld_imm64` (insn 0); returns it with the section's index.
fn one_ld_imm64() -> (Elf, u32) {
    let [a, b] = ld_imm64(1, 0, 0);
    Elf::program("kprobe/x", "prog", &[a, b, mov_imm(0, 0), exit()], 4)
}

/// A program with a legacy map and `n` relocations all on its one `ld_imm64`.
pub fn relocs_one_insn(n: usize) -> Vec<u8> {
    let (mut e, s) = one_ld_imm64();
    let maps = e.section("maps", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, legacy_map_def());
    let m = e.symbol("m", STB_GLOBAL | STT_OBJECT, maps, 0, 20);
    e.rel(s, (0..n).map(|_| (0, m, R_BPF_64_64)));
    e.finish()
}

/// `struct bpf_map_def` of an array map: type 2, key 4, value 8, 1 entry.
fn legacy_map_def() -> Vec<u8> {
    [2u32, 4, 8, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A program with `n` relocations at byte offsets past its end.
pub fn relocs_out_of_range(n: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let s = e.code("kprobe/x", &ret0());
    e.func("prog", s, 0, 2);
    e.rel(s, (0..n as u64).map(|i| ((1 << 20) | (i * 8), 1, R_BPF_64_64)));
    e.finish()
}

/// A program with `n` relocations against symbol indices far past the symbol table.
pub fn relocs_bad_symbol(n: usize) -> Vec<u8> {
    let (mut e, s) = one_ld_imm64();
    e.rel(s, (0..n as u32).map(|i| (0, u32::MAX - i, R_BPF_64_64)));
    e.finish()
}

/// `n` programs in one section that all call one `.text` subprogram of `sub_len` instructions: each program
/// is small in the file, but analyzing it means analyzing the subprogram again.
pub fn shared_subprogram(n: usize, sub_len: usize) -> Vec<u8> {
    // Program i at 3i: `call sub; exit` plus padding so each is its own function of 2 insns.
    let mut code = Vec::with_capacity(2 * n);
    for _ in 0..n {
        code.extend([call_local(-1), exit()]);
    }
    let mut e = Elf::new();
    e.license();
    let mut sub = Vec::with_capacity(sub_len);
    sub.push(mov_imm(0, 0));
    while sub.len() + 1 < sub_len {
        sub.push(add_imm(0, 1));
    }
    sub.push(exit());
    let text = e.code(".text", &sub);
    let subsym = e.symbol("sub", STT_FUNC, text, 0, 8 * sub.len() as u64);
    let s = e.code("kprobe/x", &code);
    for i in 0..n {
        e.func(&format!("p{i}"), s, 2 * i, 2);
    }
    e.rel(s, (0..n as u64).map(|i| (16 * i, subsym, R_BPF_64_32)));
    e.finish()
}

/// `n` relocations of `ld_imm64`s against one undefined (kfunc or `__ksym`) symbol whose name is `name_len`
/// bytes long: a name copied into every relocation it names would take `n * name_len` bytes.
pub fn long_extern_name(n: usize, name_len: usize) -> Vec<u8> {
    let mut code = Vec::with_capacity(2 * n + 2);
    for _ in 0..n {
        code.extend(ld_imm64(1, 0, 0));
    }
    code.extend(ret0());
    let (mut e, s) = Elf::program("kprobe/x", "prog", &code, code.len());
    let name = e.str(&vec![b'k'; name_len]);
    let k = e.symbol_at(name, STB_GLOBAL | STT_NOTYPE, 0, 0, 0);
    e.rel(s, (0..n as u64).map(|i| (16 * i, k, R_BPF_64_64)));
    e.finish()
}

/// `n` two-instruction global functions in one section whose names all start at one offset of `.strtab`, a run
/// of `len` bytes: a reader that scans each name to its end reads `n * len` bytes, and one that copies each
/// name holds that many. With `terminated` false the run ends the table without a NUL.
pub fn long_func_names(n: usize, len: usize, terminated: bool) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let code: Vec<Insn> = (0..n).flat_map(|_| ret0()).collect();
    let s = e.code("kprobe/x", &code);
    let run = vec![b'a'; len];
    let name = if terminated { e.str(&run) } else { e.strtab_raw(&run) };
    for i in 0..n {
        e.symbol_at(name, STB_GLOBAL | STT_FUNC, s, 16 * i as u64, 16);
    }
    e.finish()
}

/// `n` code sections all named by one offset of `.shstrtab`: `kprobe/` and a run of `len` bytes.
pub fn long_section_names(n: usize, len: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let name = e.shstrtab_raw(b"kprobe/");
    e.shstrtab_raw(&vec![b'a'; len]);
    for _ in 0..n {
        e.section_at(name, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, encode(&ret0(), true));
    }
    // The names of .symtab, .strtab and .shstrtab follow and end the run.
    e.finish()
}

/// One program that first spills a pointer to `slots` distinct stack offsets (8 bytes apart, going down from
/// -8, past the kernel's 512-byte frame when `slots` > 64), then runs `blocks` conditional branches: every
/// block's entry state holds every slot.
pub fn stack_slots(slots: usize, blocks: usize) -> Vec<u8> {
    let mut code = stack_slots_code(slots);
    for _ in 0..blocks {
        code.push(jeq_imm(0, 1, 0));
    }
    code.push(exit());
    Elf::program("kprobe/slots", "slots", &code, code.len()).0.finish()
}

/// [`stack_slots`] with the branches inside one loop region: every 20,000 branches a jump back 30,000 (or to the
/// first branch), so the back edges' spans overlap end to end and the analysis keeps every block's entry state
/// until the last one has run.
pub fn stack_slots_looped(slots: usize, blocks: usize) -> Vec<u8> {
    let mut code = stack_slots_code(slots);
    let first = code.len();
    for k in 0..blocks {
        if k > 0 && k % 20_000 == 0 {
            let back = (code.len() as i64 + 1 - first as i64).min(30_000);
            code.push(jeq_imm(0, 0, -back as i16));
        }
        code.push(jeq_imm(0, 1, 0));
    }
    code.push(exit());
    Elf::program("kprobe/slots", "slots", &code, code.len()).0.finish()
}

/// The start of [`stack_slots`]: `r0 = 0`, then a pointer (r1) spilled to `slots` offsets.
fn stack_slots_code(slots: usize) -> Vec<Insn> {
    let mut code = vec![mov_imm(0, 0)];
    for k in 0..slots {
        let off = -8 * (k as i64 + 1);
        if off >= i64::from(i16::MIN) {
            code.push(stx_dw(10, off as i16, 1));
        } else {
            // Beyond i16 offsets: move a base register down.
            code.extend([mov(2, 10), add_imm(2, off as i32), stx_dw(2, 0, 1)]);
        }
    }
    code
}

/// A loop whose body copies a value along a chain of `n` stack slots in reverse order, so each trip through
/// the loop moves it one slot further: a fixpoint that grows one slot per iteration.
pub fn slow_fixpoint(n: usize) -> Vec<u8> {
    // r0 = 0; *(r10-8) = r1 (ctx); loop: for k = n-1 .. 1: r2 = *(r10 - 8k); *(r10 - 8(k+1)) = r2; if r0 == 0
    // goto loop; exit.
    let mut code = vec![mov_imm(0, 0), stx_dw(10, -8, 1)];
    let head = code.len();
    for k in (1..n).rev() {
        let from = -8 * k as i64;
        let to = -8 * (k as i64 + 1);
        code.extend([mov(3, 10), add_imm(3, from as i32), ldx_dw(2, 3, 0), mov(3, 10), add_imm(3, to as i32)]);
        code.push(stx_dw(3, 0, 2));
    }
    let back = head as i64 - (code.len() as i64 + 1);
    code.push(jeq_imm(0, 0, back.clamp(i64::from(i16::MIN), 0) as i16));
    code.push(exit());
    Elf::program("kprobe/fix", "fix", &code, code.len()).0.finish()
}

/// [`slow_fixpoint`] inside the kernel's 512-byte frame, down slots `stride` bytes apart (8: the 64 aligned
/// ones; 1: every offset, misaligned), with `pad` more instructions in the loop body: every trip round the loop
/// re-interprets the whole body.
pub fn slow_fixpoint_in_frame(pad: usize, stride: i16) -> Vec<u8> {
    let mut code = vec![mov_imm(0, 0), stx_dw(10, -8, 1)];
    let head = code.len();
    let slots = (512 - 8) / stride;
    for k in (0..slots).rev() {
        code.extend([ldx_dw(2, 10, -8 - stride * k), stx_dw(10, -8 - stride * (k + 1), 2)]);
    }
    code.extend(std::iter::repeat_n(mov_imm(4, 0), pad));
    // if r0 == 1 skip the back edge; gotol head; exit
    code.push(jeq_imm(0, 1, 1));
    let back = head as i64 - (code.len() as i64 + 1);
    code.push(insn(0x06, 0, 0, 0, back as i32));
    code.push(exit());
    Elf::program("kprobe/fix", "fix", &code, code.len()).0.finish()
}

/// An object with a license and `maps` legacy maps `m<i>` in section `maps`.
fn with_legacy_maps(maps: usize) -> Elf {
    let mut e = Elf::new();
    e.license();
    let defs: Vec<u8> = (0..maps).flat_map(|_| legacy_map_def()).collect();
    let sec = e.section("maps", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, defs);
    for i in 0..maps {
        e.symbol(&format!("m{i}"), STB_GLOBAL | STT_OBJECT, sec, 20 * i as u64, 20);
    }
    e
}

/// `maps` legacy maps and `progs` programs, each looking up a map the object does not name (a raw map fd):
/// every program may touch every map from the 128th on.
pub fn many_maps(maps: usize, progs: usize) -> Vec<u8> {
    let mut e = with_legacy_maps(maps);
    // r1 = map fd 5 (src_reg 1, no relocation); r2 = r10; r2 += -8; *(r10-8) = 0; call lookup; r0 = 0; exit
    let [ld, ld_hi] = ld_map_fd(1, 5);
    let prog = [
        ld,
        ld_hi,
        mov_imm(3, 0),
        stx_dw(10, -8, 3),
        mov(2, 10),
        add_imm(2, -8),
        call_helper(1),
        mov_imm(0, 0),
        exit(),
    ];
    let code: Vec<Insn> = (0..progs).flat_map(|_| prog).collect();
    let s = e.code("kprobe/x", &code);
    for i in 0..progs {
        e.func(&format!("p{i}"), s, prog.len() * i, prog.len());
    }
    e.finish()
}

/// `maps` legacy maps and `relocs` `ld_imm64`s against an undefined `CONFIG_` extern (a `.kconfig` value):
/// looking the `.kconfig` map up among the maps on every relocation costs `maps * relocs`.
pub fn kconfig_storm(maps: usize, relocs: usize) -> Vec<u8> {
    let mut e = with_legacy_maps(maps);
    let mut code = Vec::with_capacity(2 * relocs + 2);
    for _ in 0..relocs {
        code.extend(ld_imm64(1, 0, 0));
    }
    code.extend(ret0());
    let s = e.code("kprobe/x", &code);
    e.func("prog", s, 0, code.len());
    let k = e.symbol("CONFIG_HZ", STB_GLOBAL | STT_NOTYPE, 0, 0, 0);
    e.rel(s, (0..relocs as u64).map(|i| (16 * i, k, R_BPF_64_64)));
    e.finish()
}

/// Policy YAML nested `depth` levels deep in flow sequences.
pub fn yaml_deep(depth: usize) -> String {
    format!("version: 1\nrules: {}{}\n", "[".repeat(depth), "]".repeat(depth))
}

/// The billion-laughs pattern: each of `levels` anchors is a list of ten aliases of the one before.
pub fn yaml_laughs(levels: usize) -> String {
    let mut s = String::from("a0: &a0 [lol]\n");
    for i in 1..=levels {
        let prev = format!("*a{}", i - 1);
        s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    s
}

/// A flat policy with `rules` rules: a big file that is all valid structure.
pub fn yaml_many_rules(rules: usize) -> String {
    let mut s = String::from("version: 1\nmode: enforce\ndefault: deny\nrules:\n");
    for i in 0..rules {
        s.push_str(&format!("  - name: r{i}\n    subject:\n      exe: /usr/bin/x{i}\n    action: deny\n"));
    }
    s
}

/// `aliases` aliases of the first of `anchors` anchors: finding an anchor by a backwards scan costs
/// `anchors * aliases`.
pub fn yaml_many_anchors(anchors: usize, aliases: usize) -> String {
    let mut s = String::from("version: 1\nx: [");
    for i in 0..anchors {
        s.push_str(&format!("&a{i} v, "));
    }
    s.push_str("]\ny: [");
    for _ in 0..aliases {
        s.push_str("*a0, ");
    }
    s.push_str("]\n");
    s
}

/// Anchors nested `depth` deep around a list of `width` scalars: each anchor keeps its own copy of everything
/// inside it, `depth * width` nodes for a document of `depth + width`.
pub fn yaml_nested_anchors(depth: usize, width: usize) -> String {
    let mut s = String::from("version: 1\nx: ");
    for i in 0..depth {
        s.push_str(&format!("&n{i} ["));
    }
    s.push_str(&vec!["v"; width].join(", "));
    s.push_str(&"]".repeat(depth));
    s.push('\n');
    s
}
