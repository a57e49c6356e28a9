//! BPF instructions, built field by field.
//!
//! [`Insn`] has the memory layout of the kernel's `struct bpf_insn`, so a slice of them can be handed to
//! `bpf_prog_load` as it is (cast the pointer), and [`Insn::to_bytes`] gives the bytes an object file of either
//! byte order stores. The builders below are `const fn`s named after what the instruction does; [`insn`] takes
//! every field, for anything they do not cover (including invalid instructions).

/// One instruction slot (an `ld_imm64` takes two).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u8,
    /// `dst_reg:4, src_reg:4`, as the C bitfields lie in memory on this host: dst in the low nibble on a
    /// little-endian host, in the high one on a big-endian host.
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

// The layout of `struct bpf_insn`: the casts in the live tests and the load benchmark rely on it.
const _: () = assert!(size_of::<Insn>() == 8 && align_of::<Insn>() == 4);

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let (dst, src) = (dst & 0xf, src & 0xf);
        let regs = if cfg!(target_endian = "little") { src << 4 | dst } else { dst << 4 | src };
        Insn { code, regs, off, imm }
    }

    pub const fn dst(self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0xf
        } else {
            self.regs >> 4
        }
    }

    pub const fn src(self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0xf
        }
    }

    /// The 8 bytes of this slot in an object of the given byte order: a big-endian object has dst in the high
    /// nibble of the register byte, a little-endian one in the low nibble.
    pub fn to_bytes(self, little_endian: bool) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        if little_endian {
            b[1] = self.src() << 4 | self.dst();
            b[2..4].copy_from_slice(&self.off.to_le_bytes());
            b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        } else {
            b[1] = self.dst() << 4 | self.src();
            b[2..4].copy_from_slice(&self.off.to_be_bytes());
            b[4..8].copy_from_slice(&self.imm.to_be_bytes());
        }
        b
    }
}

/// The bytes of `insns` in an object of the given byte order.
pub fn encode(insns: &[Insn], little_endian: bool) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes(little_endian)).collect()
}

/// The kernel's opcode parts (`BPF_*` of `linux/bpf_common.h` and `linux/bpf.h`, without the prefix) and the
/// `src_reg` values of pseudo instructions.
pub mod op {
    // Classes.
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
    // Sizes and modes of loads and stores.
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    pub const IMM: u8 = 0x00;
    pub const ABS: u8 = 0x20;
    pub const IND: u8 = 0x40;
    pub const MEM: u8 = 0x60;
    pub const MEMSX: u8 = 0x80;
    pub const ATOMIC: u8 = 0xc0;
    // Operand source.
    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;
    // ALU operations.
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const NEG: u8 = 0x80;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const ARSH: u8 = 0xc0;
    pub const END: u8 = 0xd0;
    // Jump operations.
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const JSGT: u8 = 0x60;
    pub const JSGE: u8 = 0x70;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    pub const JSLT: u8 = 0xc0;
    pub const JSLE: u8 = 0xd0;
    /// `may_goto` (src_reg 0).
    pub const JCOND: u8 = 0xe0;
    // `src_reg` of an `ld_imm64`.
    pub const PSEUDO_MAP_FD: u8 = 1;
    pub const PSEUDO_MAP_VALUE: u8 = 2;
    /// A map, or its value, by index into the load's fd_array (libbpf's light skeletons load so).
    pub const PSEUDO_MAP_IDX: u8 = 5;
    pub const PSEUDO_MAP_IDX_VALUE: u8 = 6;
    pub const PSEUDO_FUNC: u8 = 4;
    // `src_reg` of a call.
    pub const PSEUDO_CALL: u8 = 1;
    pub const PSEUDO_KFUNC_CALL: u8 = 2;
}

/// An instruction with every field given.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn::new(code, dst, src, off, imm)
}

/// `dst op= imm` (64-bit), `op` one of [`op::ADD`], [`op::MOV`], ...
pub const fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
    insn(op::ALU64 | op | op::K, dst, 0, 0, imm)
}
/// `dst op= src` (64-bit).
pub const fn alu64_reg(op: u8, dst: u8, src: u8) -> Insn {
    insn(op::ALU64 | op | op::X, dst, src, 0, 0)
}
/// `wdst op= imm` (32-bit).
pub const fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
    insn(op::ALU | op | op::K, dst, 0, 0, imm)
}
/// `wdst op= wsrc` (32-bit).
pub const fn alu32_reg(op: u8, dst: u8, src: u8) -> Insn {
    insn(op::ALU | op | op::X, dst, src, 0, 0)
}
/// `dst = imm`.
pub const fn mov_imm(dst: u8, imm: i32) -> Insn {
    alu64_imm(op::MOV, dst, imm)
}
/// `dst = src`.
pub const fn mov(dst: u8, src: u8) -> Insn {
    alu64_reg(op::MOV, dst, src)
}
/// `dst += imm`.
pub const fn add_imm(dst: u8, imm: i32) -> Insn {
    alu64_imm(op::ADD, dst, imm)
}

/// `dst = *(size *)(src + off)`, `size` one of [`op::B`], [`op::H`], [`op::W`], [`op::DW`].
pub const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    insn(op::LDX | size | op::MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`.
pub const fn stx(size: u8, dst: u8, off: i16, src: u8) -> Insn {
    insn(op::STX | size | op::MEM, dst, src, off, 0)
}
/// `*(size *)(dst + off) = imm`.
pub const fn st_imm(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
    insn(op::ST | size | op::MEM, dst, 0, off, imm)
}
/// `dst = *(u64 *)(src + off)`.
pub const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    ldx(op::DW, dst, src, off)
}
/// `*(u64 *)(dst + off) = src`.
pub const fn stx_dw(dst: u8, off: i16, src: u8) -> Insn {
    stx(op::DW, dst, off, src)
}

/// `if dst op imm goto +off`, `op` one of [`op::JEQ`], [`op::JGT`], ...
pub const fn jmp_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
    insn(op::JMP | op | op::K, dst, 0, off, imm)
}
/// `if dst op src goto +off`.
pub const fn jmp_reg(op: u8, dst: u8, src: u8, off: i16) -> Insn {
    insn(op::JMP | op | op::X, dst, src, off, 0)
}
/// `if dst == imm goto +off`.
pub const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    jmp_imm(op::JEQ, dst, imm, off)
}
/// `goto +off`.
pub const fn ja(off: i16) -> Insn {
    insn(op::JMP | op::JA, 0, 0, off, 0)
}

/// A call of helper `id`.
pub const fn call_helper(id: i32) -> Insn {
    insn(op::JMP | op::CALL, 0, 0, 0, id)
}
/// A BPF-to-BPF call `rel` instructions past the next one (before relocation in an object).
pub const fn call_local(rel: i32) -> Insn {
    insn(op::JMP | op::CALL, 0, op::PSEUDO_CALL, 0, rel)
}
/// A call of the kfunc with BTF id `btf_id`, in the BTF object of `fd_array[fd_slot]` (0: vmlinux).
pub const fn call_kfunc(btf_id: i32, fd_slot: i16) -> Insn {
    insn(op::JMP | op::CALL, 0, op::PSEUDO_KFUNC_CALL, fd_slot, btf_id)
}
pub const fn exit() -> Insn {
    insn(op::JMP | op::EXIT, 0, 0, 0, 0)
}

/// `dst = imm64`, the two slots with `src` and `imm` in the first (the second zero): `src` 0 and `imm` 0 for a
/// slot a relocation turns into a map or extern reference, [`op::PSEUDO_MAP_FD`] for a map fd.
pub const fn ld_imm64(dst: u8, src: u8, imm: i32) -> [Insn; 2] {
    [insn(op::LD | op::DW | op::IMM, dst, src, 0, imm), insn(0, 0, 0, 0, 0)]
}
/// `dst = map` by its fd.
pub const fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    ld_imm64(dst, op::PSEUDO_MAP_FD, fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_both_orders() {
        let i = insn(0x7b, 10, 1, -8, 0x0102_0304);
        assert_eq!(i.to_bytes(true), [0x7b, 0x1a, 0xf8, 0xff, 4, 3, 2, 1]);
        assert_eq!(i.to_bytes(false), [0x7b, 0xa1, 0xff, 0xf8, 1, 2, 3, 4]);
        assert_eq!((i.dst(), i.src()), (10, 1));
        assert_eq!(stx_dw(10, -8, 1), insn(0x7b, 10, 1, -8, 0));
        assert_eq!(ld_map_fd(1, 3), [insn(0x18, 1, 1, 0, 3), Insn::default()]);
    }

    #[test]
    fn in_memory_as_the_host_lays_out_struct_bpf_insn() {
        let i = insn(0xbf, 2, 10, 0, 0);
        // SAFETY: Insn is 8 plain bytes (repr(C), no padding).
        let bytes: [u8; 8] = unsafe { std::mem::transmute(i) };
        assert_eq!(bytes, i.to_bytes(cfg!(target_endian = "little")));
    }
}
