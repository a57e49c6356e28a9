/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The scan (bpfgate::kernel_view): bpf_loop passes over prog->insnsi in chunks. The tag pass tags registers
 * and stack slots and counts classes; it needs jump and call targets marked in this CPU's jump_targets entry
 * before it reaches them. Forward ones it marks itself as it meets their jumps; a program with a backward
 * jump or call, an indirect jump or a function's address is scanned again after a marking pass
 * (scan_program).
 */
#ifndef BPFGATE_SCAN_BPF_H
#define BPFGATE_SCAN_BPF_H

/* A call's src_reg for a helper, by id in imm (the uapi names only the pseudo calls). */
#define HELPER_CALL 0

/*
 * The kernel's __BPF_FUNC_MAX_ID, from its BTF (set by the loader; 0: unknown). Helper ids at or past it, and
 * without it libbpf's poison ids, cannot execute: the verifier refuses them wherever they are reachable
 * (bpfgate::target), so such a call grants nothing.
 */
const volatile __u32 gate_helper_max_id = 0;

/* bpfgate::target::Target::helper_executable. */
static __always_inline bool helper_executable(__u32 id)
{
	if (gate_helper_max_id)
		return id < gate_helper_max_id;
	return id != GATE_POISON_CORE_RELO && id - GATE_POISON_MAP_BASE >= GATE_POISON_SPAN &&
	       id - GATE_POISON_KFUNC_BASE >= GATE_POISON_SPAN;
}

/* Instruction n's bit in a jump_targets bitmap (words or resets); the word index is masked in bounds. */
static __always_inline bool insn_bit(const __u64 *bits, __u64 n)
{
	return (bits[(n >> 6) & (GATE_MAX_INSNS / 64 - 1)] >> (n & 63)) & 1;
}

static __always_inline void set_insn_bit(__u64 *bits, __u64 n)
{
	bits[(n >> 6) & (GATE_MAX_INSNS / 64 - 1)] |= 1ULL << (n & 63);
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct jump_targets);
} jump_targets SEC(".maps");

/*
 * Adds classes; each class's evidence is the first thing that proved it. Branch-free per class: the
 * scan runs this in a loop the verifier walks, and every branch here would multiply its states. Out
 * of line, so the scan loop does not keep 13 evidence words in registers and spill them.
 */
static __noinline void note_fresh(struct scan_ctx *c, __u32 cls, __u32 ev)
{
	__u32 fresh = cls & ~c->classes;

	c->classes |= cls;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < BPFGATE_CLASS_COUNT; k++) {
		__u32 m = -((fresh >> k) & 1);

		c->evidence[k] = (ev & m) | (c->evidence[k] & ~m);
	}
}

/* Most calls prove nothing new (the same helpers again): no call to note_fresh then. */
static __always_inline void note(struct scan_ctx *c, __u32 cls, __u32 ev)
{
	if (cls & ~c->classes)
		note_fresh(c, cls, ev);
}

static __always_inline __u8 *slot_bytes(struct scan_ctx *c)
{
	return (__u8 *)c->slots;
}

/* A frame offset's slot (0-63), or -1 outside the frame. */
static __always_inline int slot_of(__s64 off)
{
	return off >= -MAX_BPF_STACK && off < 0 ? (int)((off + MAX_BPF_STACK) >> 3) : -1;
}

/*
 * OR-joins the tags `from` into `to` (same layout in scan_ctx and scan_join), a word at a time: the register
 * tags are 8-aligned, and through a __u8 pointer clang would join them a byte at a time.
 */
static __always_inline void join_tags(__u64 *to_slots, __u64 *to_regs, const __u64 *from_slots,
				      const __u64 *from_regs)
{
	for (int k = 0; k < 8; k++)
		to_slots[k] |= from_slots[k];
	to_regs[0] |= from_regs[0];
	to_regs[1] |= from_regs[1];
}

/*
 * Instruction `at`'s entry state (kernel_view::Scan::enter): every tag unknown at a reset (a backward
 * jump's or call's target, a forward one the join table could not keep, every insn after a gotox); the
 * pending state of the forward jumps to it, joined with the fall-through's unless the block ended; a
 * function's where a block starts that no jump reaches (a subprogram, dead code).
 */
static __always_inline void enter_insn(struct scan_ctx *c, struct jump_targets *jt, __u32 at, bool target,
				       bool gotox)
{
	struct scan_join *e = &jt->joins[at & (GATE_JOIN_SLOTS - 1)];
	bool hit = target && at && e->target == at;
	bool ended = c->flags & SCAN_BLOCK_ENDS;
	bool reset = gotox || (target && insn_bit(jt->resets, at));

	if (hit)
		e->target = 0;
	c->flags &= ~SCAN_BLOCK_ENDS;
	if (reset) {
		__builtin_memset(c->regs, GATE_T_ANY, sizeof(c->regs));
		c->regs[BPF_REG_10] = GATE_T_STACK;
		__builtin_memset(c->slots, GATE_T_ANY, sizeof(c->slots));
	} else if (ended && !hit) {
		/* A function's start: its arguments, a fresh frame. */
		__builtin_memset(c->regs, GATE_T_SCALAR, sizeof(c->regs));
		__builtin_memcpy(&c->regs[1], c->args, sizeof(c->args));
		c->regs[BPF_REG_10] = GATE_T_STACK;
		__builtin_memset(c->slots, GATE_T_SCALAR, sizeof(c->slots));
	} else if (hit && ended) {
		__builtin_memcpy(c->slots, e->slots, sizeof(c->slots));
		__builtin_memcpy(c->regs, e->regs, sizeof(c->regs));
	} else if (hit) {
		join_tags(c->slots, (__u64 *)c->regs, e->slots, (const __u64 *)e->regs);
	}
}

/*
 * A jump from `at` to `t` (kernel_view::Scan::jump): a forward target gets the current state, joined in
 * its entry; when the entry holds another pending target, `t` is marked to start unknown instead.
 */
static __always_inline void jump_tags(struct scan_ctx *c, struct jump_targets *jt, __u32 at, __s64 t)
{
	if (t >= c->len || t >= GATE_MAX_INSNS)
		return;
	if (t <= at) {
		/* A backward target: it should have reset the tags, so one pass is not enough. */
		if (t >= 0 && (c->flags & SCAN_ONE_PASS))
			c->flags |= SCAN_RESCAN;
		return;
	}
	struct scan_join *e = &jt->joins[t & (GATE_JOIN_SLOTS - 1)];

	/* The marking pass's bit, when there was none. */
	set_insn_bit(jt->words, t);

	if (e->target == t) {
		join_tags(e->slots, (__u64 *)e->regs, c->slots, (const __u64 *)c->regs);
	} else if (!e->target) {
		__builtin_memcpy(e->slots, c->slots, sizeof(c->slots));
		__builtin_memcpy(e->regs, c->regs, sizeof(c->regs));
		e->target = t;
	} else {
		set_insn_bit(jt->resets, t);
	}
}

/* The bytes a load or store of `code` accesses. */
static __always_inline __u32 access_size(__u8 code)
{
	return BPF_SIZE(code) == BPF_DW ? 8 : BPF_SIZE(code) == BPF_H ? 2 : BPF_SIZE(code) == BPF_B ? 1 : 4;
}

/* Memory tagged t is written at insn `at` (stored as at + 1). */
static __always_inline void written(struct scan_ctx *c, __u32 at, __u8 t)
{
	if (t & GATE_T_UNKNOWN) {
		c->unknown_store = at + 1;
		return;
	}
	if (t & GATE_T_MAP_VALUE)
		c->map_store = at + 1;
	if (t & GATE_T_PACKET)
		c->packet_store = at + 1;
}

static __always_inline __u8 load_tag(struct scan_ctx *c, __u32 at, __u8 base, __s16 off, bool dw, bool sx)
{
	__u8 b = c->regs[base & 0xf];
	bool wide = dw && !sx;
	__u8 v = 0;

	if (b & GATE_T_UNKNOWN) {
		c->unknown_load = at + 1;
		return GATE_T_ANY;
	}
	if (b & GATE_T_BTF) {
		c->btf_load = at + 1;
		v |= GATE_T_SCALAR | (wide ? GATE_T_BTF : 0);
	}
	if (b & (GATE_T_SCALAR | GATE_T_PACKET | GATE_T_OTHER))
		v |= GATE_T_SCALAR;
	/* A kptr, or an arena pointer. */
	if (b & GATE_T_MAP_VALUE)
		v |= GATE_T_SCALAR | (wide ? GATE_T_BTF | GATE_T_MAP_VALUE : 0);
	if (b & GATE_T_CTX) {
		if (btf_typed(c->prog_type))
			v |= GATE_T_SCALAR | (wide ? GATE_T_BTF : 0);
		else if (packet_ctx_field(c->prog_type, off))
			v |= GATE_T_PACKET;
		else
			v |= GATE_T_SCALAR;
	}
	if (b & GATE_T_STACK) {
		int i = slot_of(off);

		if (base == BPF_REG_10) {
			if (wide && i >= 0 && i < 64 && (off & 7) == 0)
				v |= slot_bytes(c)[i];
			else
				v |= GATE_T_SCALAR;
		} else if (wide) {
			/* Somewhere in the frame: any slot. */
			__u64 all = 0;

			for (int k = 0; k < 8; k++)
				all |= c->slots[k];
			all |= all >> 32;
			all |= all >> 16;
			all |= all >> 8;
			v |= GATE_T_SCALAR | (__u8)all;
		} else {
			v |= GATE_T_SCALAR;
		}
	}
	return v ? v : GATE_T_SCALAR;
}

static __always_inline void store_tag(struct scan_ctx *c, __u32 at, __u8 base, __s16 off, __u32 size,
				      __u8 value)
{
	__u8 b = c->regs[base & 0xf];

	written(c, at, b);
	if (!(b & (GATE_T_STACK | GATE_T_UNKNOWN)))
		return;
	if (base != BPF_REG_10) {
		/* Perhaps somewhere in the frame. */
		__u64 spread = (__u64)value * 0x0101010101010101ULL;

		for (int k = 0; k < 8; k++)
			c->slots[k] |= spread;
		return;
	}
	int i = slot_of(off);

	if (size == 8 && (off & 7) == 0) {
		if (i >= 0 && i < 64)
			slot_bytes(c)[i] = value;
		return;
	}
	/* What is left of a pointer partly overwritten is no pointer. */
	if (i >= 0 && i < 64)
		slot_bytes(c)[i] = GATE_T_SCALAR;
	i = slot_of((__s64)off + size - 1);
	if (i >= 0 && i < 64)
		slot_bytes(c)[i] = GATE_T_SCALAR;
}

/* A call's effect on the tags: r0 gets ret; one that runs program code given a stack pointer may have stored anything in the frame. */
static __always_inline void call_tags(struct scan_ctx *c, __u8 ret, bool escapes)
{
	__u8 args = c->regs[1] | c->regs[2] | c->regs[3] | c->regs[4] | c->regs[5];

	if (escapes && (args & (GATE_T_STACK | GATE_T_UNKNOWN)))
		__builtin_memset(c->slots, GATE_T_ANY, sizeof(c->slots));
	c->regs[0] = ret;
	__builtin_memset(&c->regs[1], GATE_T_SCALAR, 5);
}

/* A call with catalogued effects: the arguments it writes through, then r0. */
static __always_inline void known_call(struct scan_ctx *c, __u32 at, __u8 ret, __u8 flags)
{
	for (int r = 1; r <= 5; r++)
		if (flags & (1U << (r - 1)))
			written(c, at, c->regs[r]);
	call_tags(c, ret, flags & GATE_CALL_CALLBACK);
}

/* A call that could do anything. */
static __always_inline void unknown_call(struct scan_ctx *c, __u32 at)
{
	c->unknown_store = at + 1;
	call_tags(c, GATE_T_ANY, true);
}

static __always_inline void scan_call(struct scan_ctx *c, struct jump_targets *jt, __u8 src, __s16 off,
				      __s32 imm, __u32 at)
{
	if (src == HELPER_CALL) {
		__u32 id = (__u32)imm;

		if (!helper_executable(id)) {
			/* No class; a path through it does not exist in a program that loads. */
			c->flags |= SCAN_NOT_EXECUTABLE;
			call_tags(c, GATE_T_SCALAR, false);
		} else if (id < BPFGATE_HELPER_COUNT) {
			__u32 k = id & (BPFGATE_HELPER_TABLE - 1);
			__u8 ret = bpfgate_helper_ret[k];

			if (ret & GATE_T_BTF)
				c->flags |= SCAN_BTF_SOURCE;
			note(c, bpfgate_helper_classes[id], GATE_EV_HELPER | (id & GATE_EV_VALUE_MASK));
			known_call(c, at, ret, bpfgate_helper_flags[k]);
		} else {
			if (!(c->classes & BPFGATE_CLASS_UNKNOWN))
				c->unknown_helper = id;
			note(c, BPFGATE_CLASS_UNKNOWN, GATE_EV_HELPER | (id & GATE_EV_VALUE_MASK));
			unknown_call(c, at);
		}
	} else if (src == BPF_PSEUDO_KFUNC_CALL) {
		struct gate_kfunc_key key = { .btf_id = (__u32)imm };
		__u64 *found = NULL;

		/* vmlinux's kfuncs by id; a module's by its BTF object too (none if it cannot be told). */
		if (off == 0 || (key.btf_obj = gate_module_btf(c, off, key.btf_id)))
			found = bpf_map_lookup_elem(&kfunc_classes, &key);
		c->flags |= SCAN_BTF_SOURCE; /* kfuncs trade in BTF pointers */
		if (found) {
			__u64 v = *found;

			note(c, (__u32)v & BPFGATE_CLASS_ALL,
			     GATE_EV_KFUNC | GATE_EV_CATALOGUED |
				     ((v >> GATE_KFUNC_INDEX_SHIFT) & (GATE_EV_CATALOGUED - 1)));
			known_call(c, at, v >> GATE_KFUNC_RET_SHIFT, v >> GATE_KFUNC_FLAGS_SHIFT);
		} else {
			/* Not catalogued: unknown, and it could write anything. */
			note(c, BPFGATE_CLASS_UNKNOWN,
			     GATE_EV_KFUNC | (key.btf_id & (GATE_EV_CATALOGUED - 1)));
			unknown_call(c, at);
		}
	} else if (src == BPF_PSEUDO_CALL) {
		__s64 t = (__s64)at + 1 + imm;

		/* Without the marking pass: a later function's start is marked here, an earlier one needs it. */
		if (c->flags & SCAN_ONE_PASS) {
			if (t > at && t < c->len && t < GATE_MAX_INSNS)
				set_insn_bit(jt->words, t);
			else if (t >= 0 && t <= at)
				c->flags |= SCAN_RESCAN;
		}
		/* A subprogram: it starts with these arguments (a pointer to this frame is none to its own), and
		 * could store anything through a stack pointer it is handed. */
		for (int r = 1; r <= 5; r++) {
			__u8 t = c->regs[r];

			c->args[r - 1] |= t & GATE_T_STACK ? (t & ~GATE_T_STACK) | GATE_T_UNKNOWN : t;
		}
		call_tags(c, GATE_T_ANY, true);
	}
}

static __always_inline void scan_atomic(struct scan_ctx *c, __u8 dst, __u8 src, __s16 off, __s32 op,
					__u32 size, __u32 at)
{
	bool dw = size == 8;
	__u8 old;

	if (op == BPF_LOAD_ACQ) {
		c->regs[dst] = load_tag(c, at, src, off, dw, false);
	} else if (op == BPF_STORE_REL) {
		store_tag(c, at, dst, off, size, c->regs[src]);
	} else if (op == BPF_XCHG || op == BPF_CMPXCHG) {
		old = load_tag(c, at, dst, off, dw, false);
		store_tag(c, at, dst, off, size, c->regs[src]);
		c->regs[op == BPF_XCHG ? src : 0] = old;
	} else if (op & BPF_FETCH) {
		old = load_tag(c, at, dst, off, dw, false);
		store_tag(c, at, dst, off, size, GATE_T_SCALAR);
		c->regs[src] = old;
	} else {
		store_tag(c, at, dst, off, size, GATE_T_SCALAR);
	}
}

static __always_inline __u8 ld_imm64_tag(struct scan_ctx *c, __u8 src)
{
	if (src == BPF_PSEUDO_BTF_ID) {
		c->flags |= SCAN_BTF_SOURCE;
		return GATE_T_BTF | GATE_T_SCALAR;
	}
	if (src == BPF_PSEUDO_MAP_FD || src == BPF_PSEUDO_MAP_IDX) {
		c->flags |= SCAN_MAP_REF;
		return GATE_T_OTHER;
	}
	if (src == BPF_PSEUDO_MAP_VALUE || src == BPF_PSEUDO_MAP_IDX_VALUE) {
		c->flags |= SCAN_MAP_REF;
		return GATE_T_MAP_VALUE;
	}
	return src == BPF_PSEUDO_FUNC ? GATE_T_OTHER : GATE_T_SCALAR;
}

/* An ALU64 instruction's result: d the destination's tag, s the source's (scalar for an immediate). */
static __always_inline __u8 alu64_tag(struct scan_ctx *c, __u8 code, __u8 d, __u8 s, __s16 off)
{
	bool x = BPF_SRC(code) == BPF_X;
	__u8 op = BPF_OP(code);

	if (op == BPF_MOV && x && off == 1) {
		/*
		 * addr_space_cast to an arena pointer: the verifier wants an arena bound, which fd_array binds with no
		 * ld_imm64 naming it, so stores through unknown registers may write a map, as after a map's ld_imm64.
		 */
		c->flags |= SCAN_MAP_REF;
		return GATE_T_ANY;
	}
	if (op == BPF_MOV) /* mov; movsx when off is set */
		return off == 0 ? s : GATE_T_SCALAR;
	if (op == BPF_NEG || op == BPF_END) /* neg, bswap */
		return GATE_T_SCALAR;
	if (op == BPF_ADD || op == BPF_SUB) /* add, sub: a pointer moves */
		return d | s;
	/* Other arithmetic on a pointer keeps its provenance, conservatively (the library's rule). */
	return d | s | GATE_T_SCALAR;
}

/* An ALU instruction: only its destination's tag changes. */
static __always_inline void alu_tag(struct scan_ctx *c, __u8 code, __u8 dst, __u8 src, __s16 off)
{
	if (BPF_CLASS(code) == BPF_ALU)
		c->regs[dst] = GATE_T_SCALAR;
	else
		c->regs[dst] = alu64_tag(c, code, c->regs[dst],
					 BPF_SRC(code) == BPF_X ? c->regs[src] : GATE_T_SCALAR, off);
}

/* A jump whose target is in off (imm for ja32): every JMP/JMP32 instruction but call, callx, exit and gotox. */
static __always_inline bool has_target(__u8 code)
{
	__u8 cls = BPF_CLASS(code);

	return (cls == BPF_JMP || cls == BPF_JMP32) && code != (BPF_JMP | BPF_CALL) &&
	       code != (BPF_JMP | BPF_CALL | BPF_X) && code != (BPF_JMP | BPF_EXIT) &&
	       code != (BPF_JMP | BPF_JA | BPF_X);
}

/*
 * Where a block starts (a jump target, after a block's end, every instruction after an indirect jump): the
 * entry state, before the instruction. A global function, checked once.
 */
__noinline int gate_scan_enter(struct scan_ctx *c, struct jump_targets *jt, __u32 at, __u32 target)
{
	if (!c || !jt)
		return 0;
	enter_insn(c, jt, at, target, c->flags & SCAN_GOTOX);
	return 0;
}

/* A helper call (scan_call), called from the chunk loop without gate_scan_insn's decoding. */
__noinline int gate_scan_helper(struct scan_ctx *c, struct jump_targets *jt, __s32 imm, __u32 at)
{
	if (!c || !jt)
		return 0;
	scan_call(c, jt, HELPER_CALL, 0, imm, at);
	return 0;
}

/*
 * One instruction of the second pass, after gate_scan_enter where a block starts: bpfgate::kernel_view::scan,
 * step for step. A global function:
 * the verifier checks it once, with an unknown scan_ctx, not once per state of the chunk loop.
 */
__noinline int gate_scan_insn(struct scan_ctx *c, struct jump_targets *jt, __u64 raw, __u32 at)
{
	if (!c || !jt)
		return 0;
	__u8 code = raw & 0xff;
	__u8 dst = (raw >> 8) & 0x0f;
	__u8 src = (raw >> 12) & 0x0f;
	__s16 off = (__s16)(raw >> 16);
	__s32 imm = (__s32)(raw >> 32);
	__u8 cls = BPF_CLASS(code);
	__u8 mode = BPF_MODE(code);
	__u32 size = access_size(code);

	if (has_target(code)) {
		jump_tags(c, jt, at, (__s64)at + 1 + (code == (BPF_JMP32 | BPF_JA) ? imm : off));
		if (code == (BPF_JMP | BPF_JA) || code == (BPF_JMP32 | BPF_JA))
			c->flags |= SCAN_BLOCK_ENDS;
	} else if (cls == BPF_JMP || cls == BPF_JMP32) {
		if (code == (BPF_JMP | BPF_EXIT) || code == (BPF_JMP | BPF_JA | BPF_X)) {
			c->flags |= SCAN_BLOCK_ENDS;
			/* An indirect jump resets every instruction, from the first. */
			if (code != (BPF_JMP | BPF_EXIT) && (c->flags & SCAN_ONE_PASS))
				c->flags |= SCAN_RESCAN;
		} else if (code == (BPF_JMP | BPF_CALL))
			scan_call(c, jt, src, off, imm, at);
		else if (code == (BPF_JMP | BPF_CALL | BPF_X)) {
			/* An indirect call could reach anything (the verifier refuses it; the library says unknown). */
			note(c, BPFGATE_CLASS_UNKNOWN, GATE_EV_INSN | (at & GATE_EV_VALUE_MASK));
			unknown_call(c, at);
		}
	} else if (code == (BPF_LD | BPF_IMM | BPF_DW)) {
		/* A function's address: functions start with what callbacks get, known from the marking pass. */
		if (src == BPF_PSEUDO_FUNC && (c->flags & SCAN_ONE_PASS))
			c->flags |= SCAN_RESCAN;
		c->regs[dst] = ld_imm64_tag(c, src);
	} else if (cls == BPF_LD && (mode == BPF_ABS || mode == BPF_IND)) {
		/* LD_ABS, LD_IND: r0 is packet data, r1-r5 are clobbered. */
		__builtin_memset(c->regs, GATE_T_SCALAR, 6);
	} else if (cls == BPF_LDX && (mode == BPF_MEM || mode == BPF_MEMSX)) {
		c->regs[dst] = load_tag(c, at, src, off, size == 8, mode == BPF_MEMSX);
	} else if ((cls == BPF_ST || cls == BPF_STX) && mode == BPF_MEM) {
		store_tag(c, at, dst, off, size, cls == BPF_ST ? GATE_T_SCALAR : c->regs[src]);
	} else if (cls == BPF_STX && mode == BPF_ATOMIC) {
		scan_atomic(c, dst, src, off, imm, size, at);
	} else if (cls == BPF_ALU || cls == BPF_ALU64) {
		alu_tag(c, code, dst, src, off);
	}
	return 0;
}

/*
 * What the chunk functions work on: the load's pending_loads entry (its scan state and buffer) and this
 * CPU's jump targets, looked up once per load rather than once per chunk.
 */
struct scan_loop {
	struct pending_load *ts;
	struct jump_targets *jt;
};

/*
 * Reads up to GATE_CHUNK instructions of chunk `chunk` into ts->scan_buf; returns how many, 0 past the end or
 * without the load's entry or jump targets (a global function's pointer arguments may be NULL).
 */
static __always_inline __u64 read_chunk(struct pending_load *ts, struct jump_targets *jt, __u64 chunk)
{
	__u64 start = chunk * GATE_CHUNK;
	__u32 len;
	__u64 n;

	if (!ts || !jt)
		return 0;
	len = ts->scan.len;
	/* Explicit bounds: the verifier needs them for the size and address below. */
	if (start >= len || start >= GATE_MAX_INSNS)
		return 0;
	/*
	 * The program's last chunk: what follows its end reads as instructions of code 0, which the tag pass
	 * passes over (the second half of an ld_imm64), so its loop needs no bound but the chunk's. (Before n
	 * is bounded: 6.1's verifier loses the bound across the memset.)
	 */
	if (len - start < GATE_CHUNK)
		__builtin_memset(ts->scan_buf, 0, sizeof(ts->scan_buf));
	n = len - start;
	if (n > GATE_CHUNK)
		n = GATE_CHUNK;
	if (bpf_probe_read_kernel(ts->scan_buf, n * sizeof(ts->scan_buf[0]),
				  (const void *)(ts->scan.insns + start * sizeof(ts->scan_buf[0]))))
		return 0;
	return n;
}

/* First pass, one chunk: marks the jump targets, and notes an indirect jump. */
__noinline int gate_mark_chunk(struct pending_load *ts, struct jump_targets *jt, __u64 chunk)
{
	__u64 n = read_chunk(ts, jt, chunk);
	struct scan_ctx *c;

	if (!n)
		return 1;
	c = &ts->scan;
#pragma clang loop unroll(disable)
	for (__u32 j = 0; j < GATE_CHUNK; j++) {
		if (j >= n)
			break;
		__u8 code = ts->scan_buf[j].code;
		__u8 src = ts->scan_buf[j].regs >> 4;
		__s32 imm = ts->scan_buf[j].imm;

		/* Most instructions neither jump nor call nor take a function's address. */
		if (BPF_CLASS(code) != BPF_JMP && BPF_CLASS(code) != BPF_JMP32) {
			if (code == (BPF_LD | BPF_IMM | BPF_DW) && src == BPF_PSEUDO_FUNC)
				c->flags |= SCAN_FUNC_ADDR;
			continue;
		}
		if (code == (BPF_JMP | BPF_CALL) && src == HELPER_CALL) {
			/* A call that cannot execute runs no callback. */
			if (helper_executable((__u32)imm))
				c->callbacks |=
					(__u32)imm < BPFGATE_HELPER_COUNT
						? bpfgate_helper_callback[imm & (BPFGATE_HELPER_TABLE - 1)]
						: GATE_T_ANY;
			continue;
		}
		/* A kfunc: what it hands a callback is not looked up. */
		if (code == (BPF_JMP | BPF_CALL) && src == BPF_PSEUDO_KFUNC_CALL)
			c->callbacks = GATE_T_ANY;
		if (code == (BPF_JMP | BPF_JA | BPF_X))
			c->flags |= SCAN_GOTOX;
		if (!has_target(code) && !(code == (BPF_JMP | BPF_CALL) && src == BPF_PSEUDO_CALL))
			continue;
		/* A jump's target, or a called function's first instruction. */
		__s64 t =
			(__s64)(chunk * GATE_CHUNK + j) + 1 +
			(code == (BPF_JMP32 | BPF_JA) || code == (BPF_JMP | BPF_CALL) ? imm
										      : ts->scan_buf[j].off);

		if (t >= 0 && t < c->len && t < GATE_MAX_INSNS) {
			set_insn_bit(jt->words, t);
			/* A backward target resets the tags: its state comes from code not scanned yet. */
			if (t <= chunk * GATE_CHUNK + j)
				set_insn_bit(jt->resets, t);
		}
	}
	return 0;
}

/* Before the first pass: clears the bits of 8 words (512 instructions). */
__noinline int gate_clear_chunk(struct jump_targets *jt, __u64 i)
{
	if (!jt)
		return 1;
	for (__u32 k = 0; k < 8; k++) {
		jt->words[(i * 8 + k) & (GATE_MAX_INSNS / 64 - 1)] = 0;
		jt->resets[(i * 8 + k) & (GATE_MAX_INSNS / 64 - 1)] = 0;
	}
	return 0;
}

_Static_assert(GATE_CHUNK == 64, "a chunk's jump target bits are one jump_targets word");

/*
 * The chunk's instructions that start a block because of what came before (flags): every one after an
 * indirect jump, or `next` (a bit), the one after a block's end (0 past the chunk: the next chunk reads the
 * flag). Branch-free: the verifier walks the chunk loop, and a branch here would multiply its states.
 */
static __always_inline __u64 ends_bits(__u32 flags, __u64 next)
{
	_Static_assert(SCAN_BLOCK_ENDS == 1U << 2 && SCAN_GOTOX == 1U << 3, "the shifts below");
	return (((flags >> 2) & 1) * next) | -(__u64)((flags >> 3) & 1);
}

/* Chunk `chunk`'s jump target bits, instruction j of the chunk at bit j. */
static __always_inline __u64 chunk_targets(struct jump_targets *jt, __u64 chunk)
{
	return jt->words[chunk & (GATE_MAX_INSNS / 64 - 1)];
}

/* The frame's lowest offset, -MAX_BPF_STACK, as an instruction's 16 bits. */
#define FRAME_OFF_MIN ((__u16) - MAX_BPF_STACK)
_Static_assert(FRAME_OFF_MIN == 0xfe00 && !(FRAME_OFF_MIN & 7), "a frame slot is bits 3-8 of its offset");

/* A conditional jump's op (BPF_OP >> 4: jeq .. jsge, jlt .. jsle, jcond): bit k of this mask. */
#define COND_JUMP_OPS 0x7cfeU

/*
 * Second pass, one chunk: the tags and classes. The commonest instructions and block entries are done here,
 * each on its own short path (ALU on scalars, the frame through r10, plain context loads, conditional jumps,
 * helper calls that prove nothing new, map addresses, the join at a forward jump's target); the rest through
 * gate_scan_insn, gate_scan_helper and gate_scan_enter, whose calls cost more than what those do (they are
 * global functions so that the verifier checks their many branches once). The verifier walks this loop once
 * per iteration: what goes into it costs verifier work too (gate-load-bench prints how much).
 */
__noinline int gate_scan_chunk(struct pending_load *ts, struct jump_targets *jt, __u64 chunk)
{
	__u64 n = read_chunk(ts, jt, chunk);
	__u64 base = chunk * GATE_CHUNK;
	struct scan_ctx *c;
	__u64 entries;

	if (!n)
		return 1;
	c = &ts->scan;
	c->scanned = base + n;
	/*
	 * The chunk's instructions that start a block, in a register: its jump targets, and the first after a
	 * block's end. A jump can add a target, and an instruction a block's end, so both add their bits.
	 */
	entries = chunk_targets(jt, chunk) | ends_bits(c->flags, 1);
#pragma clang loop unroll(disable)
	for (__u64 j = 0; j < GATE_CHUNK; j++) {
		struct raw_insn *p = &ts->scan_buf[j];
		__u8 code = p->code;
		__u8 cls = BPF_CLASS(code);
		__u8 dst = p->regs & 0x0f;
		__u8 src = p->regs >> 4;

		if ((entries >> j) & 1) {
			struct scan_join *e = &jt->joins[(base + j) & (GATE_JOIN_SLOTS - 1)];

			/*
			 * The commonest entry, as enter_insn does it: forward jumps' state joined with the
			 * fall-through's. (An entry joined here is a jump target: a join entry names only those,
			 * and never instruction 0.)
			 */
			if (!(c->flags & (SCAN_BLOCK_ENDS | SCAN_GOTOX)) && e->target == base + j &&
			    !insn_bit(jt->resets, base + j)) {
				e->target = 0;
				join_tags(c->slots, (__u64 *)c->regs, e->slots, (const __u64 *)e->regs);
			} else {
				gate_scan_enter(c, jt, base + j, (chunk_targets(jt, chunk) >> j) & 1);
			}
		}
		if (cls == BPF_ALU64 || cls == BPF_ALU) {
			__u64 d = c->regs[dst];
			__u64 s = code & BPF_X ? c->regs[src] : GATE_T_SCALAR;

			/* Scalars in, a scalar out: no tag changes (but a cast to an arena pointer, mov with off 1). */
			if ((d | s) == GATE_T_SCALAR &&
			    (code != (BPF_ALU64 | BPF_MOV | BPF_X) || p->off != 1))
				continue;
			c->regs[dst] = cls == BPF_ALU ? GATE_T_SCALAR : alu64_tag(c, code, d, s, p->off);
			continue;
		}
		__s16 off = p->off;

		/*
		 * Frame offsets as the 16 bits they are: -512..-1 is 0xfe00..0xffff, and its slot is bits 3-8
		 * (slot_of), with no sign extension.
		 */
		__u64 uoff = (__u16)off;

		/* A store to the frame through r10 (store_tag's work for it: no class; one or two slots). */
		if ((code & 0xe6) == (BPF_MEM | BPF_ST) && dst == BPF_REG_10 &&
		    c->regs[BPF_REG_10] == GATE_T_STACK && uoff >= FRAME_OFF_MIN) {
			__u8 *slot = &slot_bytes(c)[(uoff >> 3) & 63];

			if (BPF_SIZE(code) == BPF_DW && !(uoff & 7)) {
				*slot = cls == BPF_ST ? GATE_T_SCALAR : c->regs[src];
				continue;
			}
			/* What is left of a pointer partly overwritten is no pointer. */
			__u64 last = uoff + access_size(code) - 1;

			*slot = GATE_T_SCALAR;
			if (last <= 0xffff)
				slot_bytes(c)[(last >> 3) & 63] = GATE_T_SCALAR;
			continue;
		}
		if (cls == BPF_LDX && (BPF_MODE(code) == BPF_MEM || BPF_MODE(code) == BPF_MEMSX)) {
			__u8 b = c->regs[src];

			/* From the context, a field that is neither BTF-typed nor a packet pointer: a scalar. */
			if (b == GATE_T_CTX && !c->ctx_btf && uoff != (c->ctx_fields & 0xffff) &&
			    uoff != c->ctx_fields >> 16) {
				c->regs[dst] = GATE_T_SCALAR;
				continue;
			}
			/* From the frame through r10 (load_tag's work for it). */
			if (src == BPF_REG_10 && b == GATE_T_STACK && uoff >= FRAME_OFF_MIN) {
				__u8 v = BPF_SIZE(code) == BPF_DW && !(uoff & 7) && BPF_MODE(code) == BPF_MEM
						 ? slot_bytes(c)[(uoff >> 3) & 63]
						 : GATE_T_SCALAR;

				c->regs[dst] = v ? v : GATE_T_SCALAR;
				continue;
			}
		}
		if ((cls == BPF_JMP || cls == BPF_JMP32) && ((COND_JUMP_OPS >> (code >> 4)) & 1)) {
			jump_tags(c, jt, base + j, (__s64)(base + j) + 1 + off);
			entries |= chunk_targets(jt, chunk);
			continue;
		}
		if (code == (BPF_JMP | BPF_CALL) && src == HELPER_CALL) {
			__u32 id = p->imm;
			__u32 k = id & (BPFGATE_HELPER_TABLE - 1);

			/*
			 * The commonest call: a helper that proves no class not proved yet, writes through no
			 * argument and runs no callback (scan_call's work for it: r0 gets what it returns).
			 */
			if (id < BPFGATE_HELPER_COUNT && helper_executable(id) && !bpfgate_helper_flags[k] &&
			    !(bpfgate_helper_classes[id] & ~c->classes)) {
				__u8 ret = bpfgate_helper_ret[k];

				if (ret & GATE_T_BTF)
					c->flags |= SCAN_BTF_SOURCE;
				call_tags(c, ret, false);
				continue;
			}
			gate_scan_helper(c, jt, id, base + j);
			continue;
		}
		/* A map's address (ld_imm64_tag's work for it), in every program that uses a map. */
		if (code == (BPF_LD | BPF_IMM | BPF_DW) &&
		    (src == BPF_PSEUDO_MAP_FD || src == BPF_PSEUDO_MAP_IDX)) {
			c->flags |= SCAN_MAP_REF;
			c->regs[dst] = GATE_T_OTHER;
			continue;
		}
		/* An ld_imm64's second half (or another no-op of class LD, or past the program's end): nothing. */
		if (code == 0)
			continue;
		__u64 raw;

		__builtin_memcpy(&raw, p, sizeof(raw));
		gate_scan_insn(c, jt, raw, base + j);
		entries |= chunk_targets(jt, chunk) | ends_bits(c->flags, 2ULL << j);
	}
	/* One pass was not enough: stop; scan_program starts again with the marking pass. */
	return c->flags & SCAN_RESCAN ? 1 : 0;
}

/* bpf_loop callbacks must return 0 (continue) or 1 (stop). */
static long clear_chunk(__u64 i, void *data)
{
	struct scan_loop *l = data;

	return gate_clear_chunk(l->jt, i) ? 1 : 0;
}

static long mark_chunk(__u64 chunk, void *data)
{
	struct scan_loop *l = data;

	return gate_mark_chunk(l->ts, l->jt, chunk) ? 1 : 0;
}

static long scan_chunk(__u64 chunk, void *data)
{
	struct scan_loop *l = data;

	return gate_scan_chunk(l->ts, l->jt, chunk) ? 1 : 0;
}

/*
 * The tag pass's starting state: r1 the context, r10 the frame, everything else scalar, nothing found yet.
 * The module BTF objects already read (kfunc_btfs) are kept: a second pass reads the same.
 */
static __always_inline void scan_start(struct scan_ctx *c)
{
	__builtin_memset(c->regs, GATE_T_SCALAR, sizeof(c->regs));
	c->regs[1] = GATE_T_CTX;
	c->regs[BPF_REG_10] = GATE_T_STACK;
	__builtin_memset(c->slots, GATE_T_SCALAR, sizeof(c->slots));
	/* Before any call is scanned, a function starts with a scalar, or what callbacks get. */
	__builtin_memset(c->args, GATE_T_SCALAR | (c->flags & SCAN_FUNC_ADDR ? c->callbacks : 0),
			 sizeof(c->args));
	c->ctx_btf = btf_typed(c->prog_type);
	c->ctx_fields = packet_ctx_fields(c->prog_type);
	c->scanned = 0;
	c->classes = 0;
	c->unknown_helper = 0;
	c->btf_load = 0;
	c->unknown_load = 0;
	c->map_store = 0;
	c->packet_store = 0;
	c->unknown_store = 0;
	__builtin_memset(c->evidence, 0, sizeof(c->evidence));
}

/*
 * Scans the load's instructions with this CPU's jump targets (its owner set by the caller). Most programs
 * need one pass: the tag pass marks each forward jump's target as it meets the jump. A backward jump or
 * call, an indirect jump or a function's address needs the marking pass first (their targets reset the
 * tags, or every function's start depends on the whole program); the tag pass stops there, and both passes
 * run from the start, as if the first had not.
 */
static __always_inline void scan_program(struct pending_load *ts, struct jump_targets *jt)
{
	struct scan_ctx *c = &ts->scan;
	struct scan_loop loop = { .ts = ts, .jt = jt };
	__u32 chunks = (c->len + GATE_CHUNK - 1) / GATE_CHUNK;

	for (int k = 0; k < GATE_JOIN_SLOTS; k++)
		jt->joins[k].target = 0;
	bpf_loop((c->len + 511) / 512, clear_chunk, &loop, 0);
	c->flags = SCAN_ONE_PASS;
	scan_start(c);
	bpf_loop(chunks, scan_chunk, &loop, 0);
	if (!(c->flags & SCAN_RESCAN)) {
		c->flags &= ~SCAN_ONE_PASS;
		return;
	}
	for (int k = 0; k < GATE_JOIN_SLOTS; k++)
		jt->joins[k].target = 0;
	bpf_loop((c->len + 511) / 512, clear_chunk, &loop, 0);
	c->flags &= SCAN_FD_ARRAY_UNREAD; /* kept with the module BTF objects (scan_start) */
	c->callbacks = 0;
	bpf_loop(chunks, mark_chunk, &loop, 0);
	scan_start(c);
	bpf_loop(chunks, scan_chunk, &loop, 0);
}

/*
 * Counts a class (one bit) the tags found, unless a call proved it: `found` is the last access through
 * the class's tag, `unknown` the last through an unknown register where that could be the class.
 * Evidence is the later of the two.
 */
static __always_inline void maybe_class(struct scan_ctx *c, __u32 *maybe, __u32 cls, __u32 found,
					__u32 unknown)
{
	__u32 at = found > unknown ? found : unknown;
	int slot = __builtin_ctz(cls);

	if (at && !(c->classes & cls) && slot >= 0 && slot < GATE_CLASS_SLOTS) {
		*maybe |= cls;
		c->evidence[slot] = GATE_EV_INSN | ((at - 1) & GATE_EV_VALUE_MASK);
	}
}

#endif /* BPFGATE_SCAN_BPF_H */
