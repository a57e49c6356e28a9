//! The BPF instruction set: decoding and disassembly.
//!
//! Covers RFC 9669 plus what the kernel added since: atomics with load-acquire and store-release, sign-extending
//! loads and moves, signed division and modulo, unconditional byte swaps, `gotol`, `may_goto`, `addr_space_cast`,
//! and every `ld_imm64` pseudo source. Decoding is total: any 8-byte pattern either decodes or gives an
//! [`InsnError`] naming the reason.

use std::fmt;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;

/// One raw 8-byte instruction slot, with the register nibbles put in the host's order whatever the object's byte
/// order: `dst` in the low nibble of `regs`, `src` in the high. One byte for both keeps a slot at 8 bytes in
/// memory (an object keeps one per instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawInsn {
    pub code: u8,
    regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(size_of::<RawInsn>() == INSN_SIZE);

impl RawInsn {
    /// A slot of these fields; `dst` and `src` are 4-bit register numbers (higher bits are dropped).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        RawInsn { code, regs: dst & 0xf | src << 4, off, imm }
    }

    /// The destination register field.
    pub const fn dst(self) -> u8 {
        self.regs & 0xf
    }

    /// The source register field (for `ld_imm64` and calls: the pseudo source).
    pub const fn src(self) -> u8 {
        self.regs >> 4
    }

    /// Sets the source register field.
    pub fn set_src(&mut self, src: u8) {
        self.regs = self.regs & 0xf | src << 4;
    }

    /// Decodes the slot at `bytes[0..8]`; `None` when fewer than 8 bytes remain.
    pub fn parse(bytes: &[u8], little_endian: bool) -> Option<RawInsn> {
        let b: &[u8; 8] = bytes.get(..INSN_SIZE)?.try_into().ok()?;
        let (dst, src, off, imm) = if little_endian {
            (b[1] & 0xf, b[1] >> 4, i16::from_le_bytes([b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]]))
        } else {
            (b[1] >> 4, b[1] & 0xf, i16::from_be_bytes([b[2], b[3]]), i32::from_be_bytes([b[4], b[5], b[6], b[7]]))
        };
        Some(RawInsn::new(b[0], dst, src, off, imm))
    }

    /// Splits a code section into slots. A trailing partial slot is an error the caller reports.
    pub fn parse_all(bytes: &[u8], little_endian: bool) -> Vec<RawInsn> {
        // `map` over exact chunks keeps the exact length hint, so the vector is allocated once.
        bytes.chunks_exact(INSN_SIZE).map(|c| RawInsn::parse(c, little_endian).unwrap_or_default()).collect()
    }
}

/// Tests build instructions with `bpfgate-test-support`, which does not depend on this crate.
#[cfg(test)]
impl From<bpfgate_test_support::insn::Insn> for RawInsn {
    fn from(i: bpfgate_test_support::insn::Insn) -> RawInsn {
        RawInsn::new(i.code, i.dst(), i.src(), i.off, i.imm)
    }
}

// Instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h and bpf.h), for this
// module and `kernel_view`.
pub(crate) const CLASS_MASK: u8 = 0x07;
pub(crate) const CLASS_LD: u8 = 0x00;
pub(crate) const CLASS_LDX: u8 = 0x01;
pub(crate) const CLASS_ST: u8 = 0x02;
pub(crate) const CLASS_STX: u8 = 0x03;
pub(crate) const CLASS_ALU: u8 = 0x04;
pub(crate) const CLASS_JMP: u8 = 0x05;
pub(crate) const CLASS_JMP32: u8 = 0x06;
pub(crate) const CLASS_ALU64: u8 = 0x07;
pub(crate) const SIZE_MASK: u8 = 0x18;
pub(crate) const SIZE_DW: u8 = 0x18;
pub(crate) const MODE_MASK: u8 = 0xe0;
pub(crate) const MODE_IMM: u8 = 0x00;
pub(crate) const MODE_ABS: u8 = 0x20;
pub(crate) const MODE_IND: u8 = 0x40;
pub(crate) const MODE_MEM: u8 = 0x60;
pub(crate) const MODE_MEMSX: u8 = 0x80;
pub(crate) const MODE_ATOMIC: u8 = 0xc0;
pub(crate) const SRC_X: u8 = 0x08;
pub(crate) const OP_MASK: u8 = 0xf0;
pub(crate) const OP_ADD: u8 = 0x00;
pub(crate) const OP_SUB: u8 = 0x10;
pub(crate) const OP_NEG: u8 = 0x80;
pub(crate) const OP_MOV: u8 = 0xb0;
pub(crate) const OP_END: u8 = 0xd0;
/// Whole opcodes: `BPF_JMP | BPF_CALL`, `| BPF_X` (callx), `BPF_JMP | BPF_EXIT`, `BPF_JMP | BPF_JA`,
/// `BPF_JMP32 | BPF_JA` (gotol: the offset is in imm), `BPF_JMP | BPF_JA | BPF_X` (gotox: an indirect jump),
/// `BPF_LD | BPF_IMM | BPF_DW`.
pub(crate) const CALL: u8 = 0x85;
pub(crate) const CALLX: u8 = 0x8d;
pub(crate) const EXIT: u8 = 0x95;
pub(crate) const JA: u8 = 0x05;
pub(crate) const JA32: u8 = 0x06;
pub(crate) const GOTOX: u8 = 0x0d;
pub(crate) const LD_IMM64: u8 = 0x18;
/// Atomic operations (imm of a `BPF_STX | BPF_ATOMIC`).
pub(crate) const ATOMIC_FETCH: i32 = 0x01;
pub(crate) const ATOMIC_XCHG: i32 = 0xe1;
pub(crate) const ATOMIC_CMPXCHG: i32 = 0xf1;
pub(crate) const ATOMIC_LOAD_ACQ: i32 = 0x100;
pub(crate) const ATOMIC_STORE_REL: i32 = 0x110;
/// The frame pointer, r10.
pub(crate) const REG_FP: u8 = 10;

/// `ld_imm64` pseudo sources (src_reg of the first slot).
pub const PSEUDO_MAP_FD: u8 = 1;
pub const PSEUDO_MAP_VALUE: u8 = 2;
pub const PSEUDO_BTF_ID: u8 = 3;
pub const PSEUDO_FUNC: u8 = 4;
pub const PSEUDO_MAP_IDX: u8 = 5;
pub const PSEUDO_MAP_IDX_VALUE: u8 = 6;
/// `call` sources: a helper by id (0), a subprogram, a kfunc by BTF id.
pub const CALL_HELPER: u8 = 0;
pub const PSEUDO_CALL: u8 = 1;
pub const PSEUDO_KFUNC_CALL: u8 = 2;

/// Memory access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn from_code(code: u8) -> Size {
        match code & 0x18 {
            0x00 => Size::W,
            0x08 => Size::H,
            0x10 => Size::B,
            _ => Size::DW,
        }
    }
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
    fn c_type(self, signed: bool) -> &'static str {
        match (self, signed) {
            (Size::B, false) => "u8",
            (Size::H, false) => "u16",
            (Size::W, false) => "u32",
            (Size::DW, false) => "u64",
            (Size::B, true) => "s8",
            (Size::H, true) => "s16",
            (Size::W, true) => "s32",
            (Size::DW, true) => "s64",
        }
    }
}

/// ALU operations, including the signed and sign-extending variants selected by `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Sdiv,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Smod,
    Xor,
    Mov,
    /// Sign-extending move from the low 8, 16 or 32 bits.
    Movsx(u8),
    Arsh,
}

impl AluOp {
    fn symbol(self) -> &'static str {
        match self {
            AluOp::Add => "+=",
            AluOp::Sub => "-=",
            AluOp::Mul => "*=",
            AluOp::Div => "/=",
            AluOp::Sdiv => "s/=",
            AluOp::Or => "|=",
            AluOp::And => "&=",
            AluOp::Lsh => "<<=",
            AluOp::Rsh => ">>=",
            AluOp::Mod => "%=",
            AluOp::Smod => "s%=",
            AluOp::Xor => "^=",
            AluOp::Mov | AluOp::Movsx(_) => "=",
            AluOp::Arsh => "s>>=",
        }
    }
}

/// Second operand: a register or an immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Reg(u8),
    Imm(i32),
}

/// Byte-order operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    ToLe,
    ToBe,
    /// Unconditional swap (`BPF_ALU64 | BPF_END`).
    Swap,
}

/// Atomic read-modify-write operations and the ordered loads/stores that share their encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    Add { fetch: bool },
    Or { fetch: bool },
    And { fetch: bool },
    Xor { fetch: bool },
    Xchg,
    Cmpxchg,
    LoadAcquire,
    StoreRelease,
}

/// Jump conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl Cond {
    fn symbol(self) -> &'static str {
        match self {
            Cond::Eq => "==",
            Cond::Gt => ">",
            Cond::Ge => ">=",
            Cond::Set => "&",
            Cond::Ne => "!=",
            Cond::Sgt => "s>",
            Cond::Sge => "s>=",
            Cond::Lt => "<",
            Cond::Le => "<=",
            Cond::Slt => "s<",
            Cond::Sle => "s<=",
        }
    }
}

/// What an `ld_imm64` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imm64 {
    /// A plain 64-bit constant (or, in an object, an address fixed up by a relocation), as its two 32-bit
    /// immediates: kept apart so that an [`Op`] is 16 bytes, not 24 (one per instruction of a program).
    Const {
        lo: u32,
        hi: u32,
    },
    MapFd(i32),
    MapValue {
        fd: i32,
        off: u32,
    },
    BtfId(i32),
    /// Address of a function, `imm` instructions (or bytes, before relocation) away.
    Func(i32),
    MapIdx(i32),
    MapIdxValue {
        idx: i32,
        off: u32,
    },
}

/// What a `call` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTarget {
    Helper(u32),
    /// BPF-to-BPF call, `imm` instructions after the next one.
    Local(i32),
    Kfunc(i32),
    /// `callx rN`: an indirect call the kernel does not accept.
    Indirect(u8),
}

/// A decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Alu {
        wide: bool,
        op: AluOp,
        dst: u8,
        src: Operand,
    },
    Neg {
        wide: bool,
        dst: u8,
    },
    End {
        kind: Endian,
        bits: u8,
        dst: u8,
    },
    AddrSpaceCast {
        dst: u8,
        src: u8,
        dst_as: u16,
        src_as: u16,
    },
    /// Occupies two slots.
    LdImm64 {
        dst: u8,
        value: Imm64,
    },
    /// Legacy packet loads into r0.
    LdAbs {
        size: Size,
        imm: i32,
    },
    LdInd {
        size: Size,
        src: u8,
        imm: i32,
    },
    Load {
        size: Size,
        sign_extend: bool,
        dst: u8,
        src: u8,
        off: i16,
    },
    Store {
        size: Size,
        dst: u8,
        off: i16,
        value: Operand,
    },
    Atomic {
        size: Size,
        op: AtomicOp,
        dst: u8,
        src: u8,
        off: i16,
    },
    /// `goto` (`wide`: `gotol`, offset from `imm`).
    Ja {
        off: i32,
        long: bool,
    },
    Jump {
        jmp32: bool,
        cond: Cond,
        dst: u8,
        src: Operand,
        off: i16,
    },
    MayGoto {
        off: i16,
    },
    Call(CallTarget),
    Exit,
}

// The analysis keeps one `Option<Op>` per instruction of a program: at a million instructions, each byte is a MB.
const _: () = assert!(size_of::<Option<Op>>() == 16);

/// Why an instruction does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsnError {
    #[error("invalid opcode {code:#04x}")]
    InvalidOpcode { code: u8 },
    #[error("invalid register r{reg} in opcode {code:#04x}")]
    InvalidRegister { code: u8, reg: u8 },
    #[error("reserved field not zero in opcode {code:#04x}")]
    ReservedField { code: u8 },
    #[error("ld_imm64 is missing its second slot")]
    TruncatedLdImm64,
    #[error("ld_imm64 second slot is malformed")]
    BadLdImm64Tail,
    #[error("unknown ld_imm64 pseudo source {src}")]
    BadPseudoSource { src: u8 },
    #[error("unknown atomic operation {imm:#x}")]
    BadAtomicOp { imm: i32 },
}

fn reg(code: u8, r: u8) -> Result<u8, InsnError> {
    if r > 10 {
        Err(InsnError::InvalidRegister { code, reg: r })
    } else {
        Ok(r)
    }
}

/// Decodes the instruction at `insns[0]` (and `insns[1]` for `ld_imm64`).
pub fn decode(insns: &[RawInsn]) -> Result<Op, InsnError> {
    let Some(&i) = insns.first() else {
        return Err(InsnError::TruncatedLdImm64);
    };
    let code = i.code;
    let class = code & 0x07;
    match class {
        CLASS_ALU | CLASS_ALU64 => decode_alu(i, class == CLASS_ALU64),
        CLASS_JMP | CLASS_JMP32 => decode_jmp(i, class == CLASS_JMP32),
        CLASS_LD => decode_ld(i, insns.get(1)),
        CLASS_LDX => {
            let mode = code & 0xe0;
            let sign_extend = match mode {
                MODE_MEM => false,
                MODE_MEMSX if Size::from_code(code) != Size::DW => true,
                _ => return Err(InsnError::InvalidOpcode { code }),
            };
            if i.imm != 0 {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::Load {
                size: Size::from_code(code),
                sign_extend,
                dst: reg(code, i.dst())?,
                src: reg(code, i.src())?,
                off: i.off,
            })
        }
        CLASS_ST => {
            if code & 0xe0 != MODE_MEM {
                return Err(InsnError::InvalidOpcode { code });
            }
            if i.src() != 0 {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::Store {
                size: Size::from_code(code),
                dst: reg(code, i.dst())?,
                off: i.off,
                value: Operand::Imm(i.imm),
            })
        }
        _ => {
            // The remaining class, BPF_STX (0x03).
            let size = Size::from_code(code);
            let (dst, src) = (reg(code, i.dst())?, reg(code, i.src())?);
            match code & 0xe0 {
                MODE_MEM => {
                    if i.imm != 0 {
                        return Err(InsnError::ReservedField { code });
                    }
                    Ok(Op::Store { size, dst, off: i.off, value: Operand::Reg(src) })
                }
                MODE_ATOMIC => {
                    let op = match i.imm {
                        0x00 => AtomicOp::Add { fetch: false },
                        0x01 => AtomicOp::Add { fetch: true },
                        0x40 => AtomicOp::Or { fetch: false },
                        0x41 => AtomicOp::Or { fetch: true },
                        0x50 => AtomicOp::And { fetch: false },
                        0x51 => AtomicOp::And { fetch: true },
                        0xa0 => AtomicOp::Xor { fetch: false },
                        0xa1 => AtomicOp::Xor { fetch: true },
                        0xe1 => AtomicOp::Xchg,
                        0xf1 => AtomicOp::Cmpxchg,
                        0x100 => AtomicOp::LoadAcquire,
                        0x110 => AtomicOp::StoreRelease,
                        imm => return Err(InsnError::BadAtomicOp { imm }),
                    };
                    // Read-modify-write atomics exist only for 32 and 64 bits; ordered accesses for every size.
                    let ordered = matches!(op, AtomicOp::LoadAcquire | AtomicOp::StoreRelease);
                    if !ordered && !matches!(size, Size::W | Size::DW) {
                        return Err(InsnError::InvalidOpcode { code });
                    }
                    Ok(Op::Atomic { size, op, dst, src, off: i.off })
                }
                _ => Err(InsnError::InvalidOpcode { code }),
            }
        }
    }
}

fn decode_alu(i: RawInsn, wide: bool) -> Result<Op, InsnError> {
    let code = i.code;
    let dst = reg(code, i.dst())?;
    let x = code & SRC_X != 0;
    // END keeps its width in imm and MOV its address spaces; everything else with a register source has imm 0.
    let src = if x && code & 0xf0 == 0xd0 {
        Operand::Imm(i.imm)
    } else if x {
        if i.imm != 0 && code & 0xf0 != 0xb0 {
            return Err(InsnError::ReservedField { code });
        }
        Operand::Reg(reg(code, i.src())?)
    } else {
        if i.src() != 0 && code & 0xf0 != 0xd0 {
            return Err(InsnError::ReservedField { code });
        }
        Operand::Imm(i.imm)
    };
    let plain = |op: AluOp| -> Result<Op, InsnError> {
        if i.off != 0 {
            return Err(InsnError::ReservedField { code });
        }
        Ok(Op::Alu { wide, op, dst, src })
    };
    let signed = |unsigned: AluOp, signed: AluOp| -> Result<Op, InsnError> {
        match i.off {
            0 => Ok(Op::Alu { wide, op: unsigned, dst, src }),
            1 => Ok(Op::Alu { wide, op: signed, dst, src }),
            _ => Err(InsnError::ReservedField { code }),
        }
    };
    match code & 0xf0 {
        0x00 => plain(AluOp::Add),
        0x10 => plain(AluOp::Sub),
        0x20 => plain(AluOp::Mul),
        0x30 => signed(AluOp::Div, AluOp::Sdiv),
        0x40 => plain(AluOp::Or),
        0x50 => plain(AluOp::And),
        0x60 => plain(AluOp::Lsh),
        0x70 => plain(AluOp::Rsh),
        0x80 => {
            if x || i.off != 0 || i.imm != 0 {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::Neg { wide, dst })
        }
        0x90 => signed(AluOp::Mod, AluOp::Smod),
        0xa0 => plain(AluOp::Xor),
        0xb0 => match (x, i.off) {
            (_, 0) if !x || i.imm == 0 => Ok(Op::Alu { wide, op: AluOp::Mov, dst, src }),
            (true, 1) if wide => {
                let imm = i.imm as u32;
                Ok(Op::AddrSpaceCast { dst, src: reg(code, i.src())?, dst_as: (imm >> 16) as u16, src_as: imm as u16 })
            }
            (true, 8 | 16) if i.imm == 0 => Ok(Op::Alu { wide, op: AluOp::Movsx(i.off as u8), dst, src }),
            (true, 32) if wide && i.imm == 0 => Ok(Op::Alu { wide, op: AluOp::Movsx(32), dst, src }),
            _ => Err(InsnError::ReservedField { code }),
        },
        0xc0 => plain(AluOp::Arsh),
        0xd0 => {
            let kind = match (wide, x) {
                (false, false) => Endian::ToLe,
                (false, true) => Endian::ToBe,
                (true, false) => Endian::Swap,
                (true, true) => return Err(InsnError::InvalidOpcode { code }),
            };
            if i.off != 0 || i.src() != 0 || !matches!(i.imm, 16 | 32 | 64) {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::End { kind, bits: i.imm as u8, dst })
        }
        _ => Err(InsnError::InvalidOpcode { code }),
    }
}

fn decode_jmp(i: RawInsn, jmp32: bool) -> Result<Op, InsnError> {
    let code = i.code;
    let op = code & 0xf0;
    let x = code & SRC_X != 0;
    let cond = match op {
        0x00 => {
            if x || i.src() != 0 || i.dst() != 0 {
                return Err(InsnError::ReservedField { code });
            }
            return if jmp32 {
                if i.off != 0 {
                    return Err(InsnError::ReservedField { code });
                }
                Ok(Op::Ja { off: i.imm, long: true })
            } else {
                if i.imm != 0 {
                    return Err(InsnError::ReservedField { code });
                }
                Ok(Op::Ja { off: i.off.into(), long: false })
            };
        }
        0x80 if !jmp32 => {
            if x {
                // LLVM's `callx`: the target register is in dst (or imm in older encodings).
                return Ok(Op::Call(CallTarget::Indirect(reg(code, i.dst())?)));
            }
            if i.dst() != 0 || i.off != 0 {
                return Err(InsnError::ReservedField { code });
            }
            return match i.src() {
                0 => Ok(Op::Call(CallTarget::Helper(i.imm as u32))),
                PSEUDO_CALL => Ok(Op::Call(CallTarget::Local(i.imm))),
                PSEUDO_KFUNC_CALL => Ok(Op::Call(CallTarget::Kfunc(i.imm))),
                _ => Err(InsnError::ReservedField { code }),
            };
        }
        0x90 if !jmp32 => {
            if x || i.src() != 0 || i.dst() != 0 || i.off != 0 || i.imm != 0 {
                return Err(InsnError::ReservedField { code });
            }
            return Ok(Op::Exit);
        }
        0xe0 if !jmp32 => {
            // BPF_JCOND with src_reg BPF_MAY_GOTO (0) is the only defined form.
            if x || i.src() != 0 || i.dst() != 0 || i.imm != 0 {
                return Err(InsnError::ReservedField { code });
            }
            return Ok(Op::MayGoto { off: i.off });
        }
        0x10 => Cond::Eq,
        0x20 => Cond::Gt,
        0x30 => Cond::Ge,
        0x40 => Cond::Set,
        0x50 => Cond::Ne,
        0x60 => Cond::Sgt,
        0x70 => Cond::Sge,
        0xa0 => Cond::Lt,
        0xb0 => Cond::Le,
        0xc0 => Cond::Slt,
        0xd0 => Cond::Sle,
        _ => return Err(InsnError::InvalidOpcode { code }),
    };
    let dst = reg(code, i.dst())?;
    let src = if x {
        if i.imm != 0 {
            return Err(InsnError::ReservedField { code });
        }
        Operand::Reg(reg(code, i.src())?)
    } else {
        if i.src() != 0 {
            return Err(InsnError::ReservedField { code });
        }
        Operand::Imm(i.imm)
    };
    Ok(Op::Jump { jmp32, cond, dst, src, off: i.off })
}

fn decode_ld(i: RawInsn, next: Option<&RawInsn>) -> Result<Op, InsnError> {
    let code = i.code;
    let size = Size::from_code(code);
    match code & 0xe0 {
        MODE_IMM if size == Size::DW => {
            let dst = reg(code, i.dst())?;
            if i.off != 0 {
                return Err(InsnError::ReservedField { code });
            }
            let next = next.ok_or(InsnError::TruncatedLdImm64)?;
            if next.code != 0 || next.dst() != 0 || next.src() != 0 || next.off != 0 {
                return Err(InsnError::BadLdImm64Tail);
            }
            let value = match i.src() {
                0 => Imm64::Const { lo: i.imm as u32, hi: next.imm as u32 },
                PSEUDO_MAP_FD => Imm64::MapFd(i.imm),
                PSEUDO_MAP_VALUE => Imm64::MapValue { fd: i.imm, off: next.imm as u32 },
                PSEUDO_BTF_ID => Imm64::BtfId(i.imm),
                PSEUDO_FUNC => Imm64::Func(i.imm),
                PSEUDO_MAP_IDX => Imm64::MapIdx(i.imm),
                PSEUDO_MAP_IDX_VALUE => Imm64::MapIdxValue { idx: i.imm, off: next.imm as u32 },
                src => return Err(InsnError::BadPseudoSource { src }),
            };
            Ok(Op::LdImm64 { dst, value })
        }
        MODE_ABS if size != Size::DW => {
            if i.src() != 0 || i.dst() != 0 || i.off != 0 {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::LdAbs { size, imm: i.imm })
        }
        MODE_IND if size != Size::DW => {
            if i.dst() != 0 || i.off != 0 {
                return Err(InsnError::ReservedField { code });
            }
            Ok(Op::LdInd { size, src: reg(code, i.src())?, imm: i.imm })
        }
        _ => Err(InsnError::InvalidOpcode { code }),
    }
}

impl Op {
    /// Number of 8-byte slots this instruction occupies.
    pub fn slots(&self) -> usize {
        match self {
            Op::LdImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// Registers this instruction reads, as a bitmask (bit n = rN). Call arguments are not included: how many a
    /// helper takes is not encoded in the instruction.
    pub fn uses(&self) -> u16 {
        let reg = |o: Operand| match o {
            Operand::Reg(r) => 1u16 << r,
            Operand::Imm(_) => 0,
        };
        match *self {
            Op::Alu { op: AluOp::Mov | AluOp::Movsx(_), src, .. } => reg(src),
            Op::Alu { dst, src, .. } => 1 << dst | reg(src),
            Op::Neg { dst, .. } | Op::End { dst, .. } => 1 << dst,
            Op::AddrSpaceCast { src, .. } => 1 << src,
            Op::LdImm64 { .. } | Op::Ja { .. } | Op::MayGoto { .. } | Op::Call(_) => 0,
            // Legacy packet loads take the context from r6.
            Op::LdAbs { .. } => 1 << 6,
            Op::LdInd { src, .. } => 1 << 6 | 1 << src,
            Op::Load { src, .. } => 1 << src,
            Op::Store { dst, value, .. } => 1 << dst | reg(value),
            Op::Atomic { op: AtomicOp::LoadAcquire, src, .. } => 1 << src,
            Op::Atomic { op: AtomicOp::Cmpxchg, dst, src, .. } => 1 << dst | 1 << src | 1,
            Op::Atomic { dst, src, .. } => 1 << dst | 1 << src,
            Op::Jump { dst, src, .. } => 1 << dst | reg(src),
            Op::Exit => 1,
        }
    }

    /// Registers this instruction writes, as a bitmask (bit n = rN); `call` clobbers r0-r5.
    pub fn defs(&self) -> u16 {
        match *self {
            Op::Alu { dst, .. }
            | Op::Neg { dst, .. }
            | Op::End { dst, .. }
            | Op::AddrSpaceCast { dst, .. }
            | Op::LdImm64 { dst, .. }
            | Op::Load { dst, .. } => 1 << dst,
            Op::LdAbs { .. } | Op::LdInd { .. } => 0x3f,
            Op::Atomic { op: AtomicOp::Cmpxchg, .. } => 1,
            Op::Atomic { op: AtomicOp::LoadAcquire, dst, .. } => 1 << dst,
            Op::Atomic { op: AtomicOp::Xchg, src, .. } => 1 << src,
            Op::Atomic { op: AtomicOp::Add { fetch: true } | AtomicOp::Or { fetch: true }, src, .. }
            | Op::Atomic { op: AtomicOp::And { fetch: true } | AtomicOp::Xor { fetch: true }, src, .. } => 1 << src,
            Op::Call(_) => 0x3f,
            _ => 0,
        }
    }
}

/// Names used when disassembling: helper names by id and relocation targets by slot.
pub trait Names {
    fn helper(&self, _id: u32) -> Option<&str> {
        None
    }
}

/// No names: raw numbers only.
pub struct NoNames;
impl Names for NoNames {}

/// Disassembly in the kernel's notation (`kernel/bpf/disasm.c`), e.g. `r0 = *(u32 *)(r1 +4)`.
pub struct Display<'a, N: Names + ?Sized> {
    pub op: &'a Op,
    pub names: &'a N,
    /// Symbol a relocation attaches to this instruction, shown in place of the raw immediate.
    pub reloc: Option<&'a str>,
}

fn r(wide: bool, n: u8) -> String {
    format!("{}{}", if wide { 'r' } else { 'w' }, n)
}

fn operand(wide: bool, o: Operand) -> String {
    match o {
        Operand::Reg(n) => r(wide, n),
        Operand::Imm(v) => v.to_string(),
    }
}

impl<N: Names + ?Sized> fmt::Display for Display<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.op {
            Op::Alu { wide, op: AluOp::Movsx(bits), dst, src } => {
                write!(f, "{} = (s{}){}", r(wide, dst), bits, operand(wide, src))
            }
            Op::Alu { wide, op, dst, src } => write!(f, "{} {} {}", r(wide, dst), op.symbol(), operand(wide, src)),
            Op::Neg { wide, dst } => write!(f, "{} = -{}", r(wide, dst), r(wide, dst)),
            Op::End { kind, bits, dst } => {
                let name = match kind {
                    Endian::ToLe => "le",
                    Endian::ToBe => "be",
                    Endian::Swap => "bswap",
                };
                write!(f, "r{dst} = {name}{bits} r{dst}")
            }
            Op::AddrSpaceCast { dst, src, dst_as, src_as } => {
                write!(f, "r{dst} = addr_space_cast(r{src}, {dst_as}, {src_as})")
            }
            Op::LdImm64 { dst, value } => match (value, self.reloc) {
                (Imm64::Const { .. }, Some(sym)) => write!(f, "r{dst} = {sym} ll"),
                (Imm64::Const { lo, hi }, None) => write!(f, "r{dst} = {:#x} ll", u64::from(hi) << 32 | u64::from(lo)),
                (Imm64::MapFd(fd), _) => write!(f, "r{dst} = map[id:{fd}]"),
                (Imm64::MapValue { fd, off }, _) => write!(f, "r{dst} = map[id:{fd}][0]+{off}"),
                (Imm64::BtfId(id), Some(sym)) => write!(f, "r{dst} = {sym} (btf_id {id})"),
                (Imm64::BtfId(id), None) => write!(f, "r{dst} = btf_id {id}"),
                (Imm64::Func(_), Some(sym)) => write!(f, "r{dst} = func {sym}"),
                (Imm64::Func(off), None) => write!(f, "r{dst} = func pc{off:+}"),
                (Imm64::MapIdx(i), _) => write!(f, "r{dst} = map[idx:{i}]"),
                (Imm64::MapIdxValue { idx, off }, _) => write!(f, "r{dst} = map[idx:{idx}][0]+{off}"),
            },
            Op::LdAbs { size, imm } => write!(f, "r0 = *({} *)skb[{imm}]", size.c_type(false)),
            Op::LdInd { size, src, imm } => write!(f, "r0 = *({} *)skb[r{src} + {imm}]", size.c_type(false)),
            Op::Load { size, sign_extend, dst, src, off } => {
                write!(f, "r{dst} = *({} *)(r{src} {off:+})", size.c_type(sign_extend))
            }
            Op::Store { size, dst, off, value } => {
                write!(f, "*({} *)(r{dst} {off:+}) = {}", size.c_type(false), operand(true, value))
            }
            Op::Atomic { size, op, dst, src, off } => {
                let ty = size.c_type(false);
                let w = size == Size::DW;
                let a = if w { "atomic64" } else { "atomic" };
                let rmw = |name: &str, sym: &str, fetch: bool| {
                    if fetch {
                        format!("{} = {a}_fetch_{name}(({ty} *)(r{dst} {off:+}), {})", r(w, src), r(w, src))
                    } else {
                        format!("lock *({ty} *)(r{dst} {off:+}) {sym} {}", r(w, src))
                    }
                };
                let text = match op {
                    AtomicOp::Add { fetch } => rmw("add", "+=", fetch),
                    AtomicOp::Or { fetch } => rmw("or", "|=", fetch),
                    AtomicOp::And { fetch } => rmw("and", "&=", fetch),
                    AtomicOp::Xor { fetch } => rmw("xor", "^=", fetch),
                    AtomicOp::Xchg => format!("{} = {a}_xchg(({ty} *)(r{dst} {off:+}), {})", r(w, src), r(w, src)),
                    AtomicOp::Cmpxchg => {
                        format!("{} = {a}_cmpxchg(({ty} *)(r{dst} {off:+}), {}, {})", r(w, 0), r(w, 0), r(w, src))
                    }
                    AtomicOp::LoadAcquire => format!("r{dst} = load_acquire(({ty} *)(r{src} {off:+}))"),
                    AtomicOp::StoreRelease => format!("store_release(({ty} *)(r{dst} {off:+}), r{src})"),
                };
                f.write_str(&text)
            }
            Op::Ja { off, long } => write!(f, "{} pc{off:+}", if long { "gotol" } else { "goto" }),
            Op::Jump { jmp32, cond, dst, src, off } => {
                let rhs = match src {
                    Operand::Reg(n) => r(!jmp32, n),
                    Operand::Imm(v) => format!("{:#x}", v),
                };
                write!(f, "if {} {} {rhs} goto pc{off:+}", r(!jmp32, dst), cond.symbol())
            }
            Op::MayGoto { off } => write!(f, "may_goto pc{off:+}"),
            Op::Call(CallTarget::Helper(id)) => match self.names.helper(id) {
                Some(name) => write!(f, "call bpf_{name}#{id}"),
                None => write!(f, "call unknown#{id}"),
            },
            Op::Call(CallTarget::Local(off)) => match self.reloc {
                Some(sym) => write!(f, "call {sym}"),
                None => write!(f, "call pc{off:+}"),
            },
            Op::Call(CallTarget::Kfunc(id)) => match self.reloc {
                Some(sym) => write!(f, "call {sym} (kfunc)"),
                None => write!(f, "call kfunc btf_id {id}"),
            },
            Op::Call(CallTarget::Indirect(n)) => write!(f, "callx r{n}"),
            Op::Exit => f.write_str("exit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> RawInsn {
        RawInsn::new(code, dst, src, off, imm)
    }

    fn dis(insns: &[RawInsn]) -> String {
        let op = decode(insns).expect("decodes");
        Display { op: &op, names: &NoNames, reloc: None }.to_string()
    }

    #[test]
    fn parses_what_test_support_encodes_in_either_byte_order() {
        use bpfgate_test_support::insn::{call_kfunc, encode, insn, ld_map_fd, stx_dw};
        let [ld, ld_hi] = ld_map_fd(9, -1);
        let insns = [insn(0xbf, 1, 2, -4, 0x1234_5678), stx_dw(10, -8, 3), call_kfunc(77, 2), ld, ld_hi];
        let want: Vec<RawInsn> = insns.iter().map(|&i| RawInsn::from(i)).collect();
        for little_endian in [true, false] {
            assert_eq!(RawInsn::parse_all(&encode(&insns, little_endian), little_endian), want);
        }
        assert_eq!((want[1].dst(), want[1].src(), want[1].off), (10, 3, -8));
    }

    #[test]
    fn splits_register_nibbles_by_byte_order() {
        let le = RawInsn::parse(&[0xbf, 0x21, 0x04, 0x00, 0, 0, 0, 0], true).unwrap();
        assert_eq!((le.dst(), le.src(), le.off), (1, 2, 4));
        let be = RawInsn::parse(&[0xbf, 0x12, 0x00, 0x04, 0, 0, 0, 0], false).unwrap();
        assert_eq!((be.dst(), be.src(), be.off), (1, 2, 4));
        assert!(RawInsn::parse(&[0; 7], true).is_none());
    }

    #[test]
    fn disassembles_in_kernel_notation() {
        let cases: &[(&[RawInsn], &str)] = &[
            (&[raw(0xb7, 0, 0, 0, 0)], "r0 = 0"),
            (&[raw(0xbc, 1, 2, 0, 0)], "w1 = w2"),
            (&[raw(0xbf, 1, 2, 8, 0)], "r1 = (s8)r2"),
            (&[raw(0xbf, 1, 2, 32, 0)], "r1 = (s32)r2"),
            (&[raw(0x3f, 1, 2, 1, 0)], "r1 s/= r2"),
            (&[raw(0x97, 1, 0, 1, 3)], "r1 s%= 3"),
            (&[raw(0x87, 3, 0, 0, 0)], "r3 = -r3"),
            (&[raw(0xdc, 1, 0, 0, 16)], "r1 = be16 r1"),
            (&[raw(0xd7, 1, 0, 0, 32)], "r1 = bswap32 r1"),
            (&[raw(0xbf, 1, 2, 1, 0x10000)], "r1 = addr_space_cast(r2, 1, 0)"),
            (&[raw(0x61, 0, 1, 4, 0)], "r0 = *(u32 *)(r1 +4)"),
            (&[raw(0x91, 0, 1, -2, 0)], "r0 = *(s8 *)(r1 -2)"),
            (&[raw(0x7b, 10, 1, -8, 0)], "*(u64 *)(r10 -8) = r1"),
            (&[raw(0x62, 10, 0, -4, 7)], "*(u32 *)(r10 -4) = 7"),
            (&[raw(0xdb, 1, 2, 0, 0)], "lock *(u64 *)(r1 +0) += r2"),
            (&[raw(0xc3, 1, 2, 0, 1)], "w2 = atomic_fetch_add((u32 *)(r1 +0), w2)"),
            (&[raw(0xdb, 1, 2, 0, 0xf1)], "r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)"),
            (&[raw(0xd3, 0, 1, 0, 0x100)], "r0 = load_acquire((u8 *)(r1 +0))"),
            (&[raw(0xcb, 1, 2, 0, 0x110)], "store_release((u16 *)(r1 +0), r2)"),
            (&[raw(0x05, 0, 0, 3, 0)], "goto pc+3"),
            (&[raw(0x06, 0, 0, 0, -5)], "gotol pc-5"),
            (&[raw(0xe5, 0, 0, 2, 0)], "may_goto pc+2"),
            (&[raw(0x15, 1, 0, 3, 0)], "if r1 == 0x0 goto pc+3"),
            (&[raw(0x2e, 1, 2, -1, 0)], "if w1 > w2 goto pc-1"),
            (&[raw(0x85, 0, 0, 0, 1)], "call unknown#1"),
            (&[raw(0x85, 0, 1, 0, 4)], "call pc+4"),
            (&[raw(0x95, 0, 0, 0, 0)], "exit"),
            (&[raw(0x18, 1, 0, 0, 0x1234), raw(0, 0, 0, 0, 1)], "r1 = 0x100001234 ll"),
            (&[raw(0x18, 1, 1, 0, 3), raw(0, 0, 0, 0, 0)], "r1 = map[id:3]"),
            (&[raw(0x30, 0, 0, 0, 12)], "r0 = *(u8 *)skb[12]"),
            (&[raw(0x40, 0, 3, 0, 2)], "r0 = *(u32 *)skb[r3 + 2]"),
        ];
        for (insns, want) in cases {
            assert_eq!(dis(insns), *want, "{insns:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_in_the_isa() {
        assert_eq!(decode(&[raw(0xff, 0, 0, 0, 0)]), Err(InsnError::InvalidOpcode { code: 0xff }));
        assert_eq!(decode(&[raw(0xbf, 11, 0, 0, 0)]), Err(InsnError::InvalidRegister { code: 0xbf, reg: 11 }));
        assert_eq!(decode(&[raw(0x18, 1, 0, 0, 0)]), Err(InsnError::TruncatedLdImm64));
        assert_eq!(decode(&[raw(0x18, 1, 0, 0, 0), raw(0x05, 0, 0, 0, 0)]), Err(InsnError::BadLdImm64Tail));
        assert_eq!(decode(&[raw(0x18, 1, 9, 0, 0), raw(0, 0, 0, 0, 0)]), Err(InsnError::BadPseudoSource { src: 9 }));
        assert_eq!(decode(&[raw(0xdb, 1, 2, 0, 0x02)]), Err(InsnError::BadAtomicOp { imm: 2 }));
        // Read-modify-write atomics on bytes do not exist.
        assert_eq!(decode(&[raw(0xd3, 1, 2, 0, 0)]), Err(InsnError::InvalidOpcode { code: 0xd3 }));
        // Sign-extending 64-bit load does not exist.
        assert_eq!(decode(&[raw(0x99, 0, 1, 0, 0)]), Err(InsnError::InvalidOpcode { code: 0x99 }));
        // Unsigned divide with an unknown offset variant.
        assert_eq!(decode(&[raw(0x3f, 1, 2, 2, 0)]), Err(InsnError::ReservedField { code: 0x3f }));
        // Calls and exits do not exist in JMP32.
        assert_eq!(decode(&[raw(0x96, 0, 0, 0, 0)]), Err(InsnError::InvalidOpcode { code: 0x96 }));
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let insns = RawInsn::parse_all(&bytes, true);
            for i in 0..insns.len() {
                if let Ok(op) = decode(&insns[i..]) {
                    let _ = Display { op: &op, names: &NoNames, reloc: None }.to_string();
                }
            }
        }
    }
}
