// SPDX-License-Identifier: GPL-2.0
/*
 * The gate: BPF LSM programs that decide, from the instructions the kernel has copied (no TOCTOU),
 * the maps the verifier bound and the loading task, whether a program may load, by the compiled
 * policy the daemon keeps in this object's maps (bpfgate::policy::compiled; the algorithm is
 * compiled::evaluate, mirrored step by step in gate_evaluate below).
 *
 * Hooks:
 * - lsm/bpf (every bpf() call, first): notes BPF_OBJ_GET for lsm/bpf_map; refuses
 *   BPF_LINK_GET_FD_BY_ID of the gate's own links to anyone but its daemon.
 * - lsm/bpf_prog_load: scans the program and decides everything but the map rules.
 * - lsm/bpf_prog (an fd to a program is made: right after a load's verification, or by id or pin):
 *   for a load, the final decision with the maps the verifier bound (aux->used_maps); otherwise it
 *   refuses fds to the gate's own programs to anyone but its daemon, and a program another subject
 *   loaded to anyone whose rule would not let it load that program.
 * - lsm/bpf_prog_free: drops the record of a load the verifier refused.
 * - lsm/bpf_map_create, lsm/bpf_map_free: map owners (the creating subject), by map address.
 * - lsm/bpf_map (an fd to a map is made): a writable fd to another subject's map needs the subject's
 *   rule to allow writing it; a writable fd to the gate's own maps only goes to its daemon; a map
 *   reached through a pin (BPF_OBJ_GET) is marked pinned.
 *
 * What the gate computes, per program (bpfgate::kernel_view computes the same from an object, and the
 * live conformance test requires the two to be equal):
 * - classes: exactly the classes the library derives from calls: helper classes from the catalogue
 *   table compiled in (bpfgate_catalogue.h; ids past its end are `unknown`), kfunc classes from the
 *   kfunc_classes map the loader fills from vmlinux's and the loaded modules' BTF (kfuncs not in it are
 *   `unknown`), tail_call (helper 12), override_return for BPF_MODIFY_RETURN programs, and `unknown` for an
 *   indirect call (callx). A module kfunc call names its BTF by an index into the loader's fd_array: the
 *   scan reads that fd's BTF object (gate_module_btf), and lsm/bpf_prog checks that the verifier bound
 *   the same ones (kfunc_btfs_changed), so a loader that rewrites fd_array meanwhile gains nothing.
 * - maybe_classes: kernel_read, map_write and packet_write, which the library proves by dataflow, from
 *   a tag pass (bpfgate::kernel_view, the rules in full): a first pass over the instructions marks jump
 *   and call targets in this CPU's jump_targets entry and notes what callbacks may get; the second tags
 *   what each register and stack slot may hold (scalar, context, stack, packet, BTF pointer, map value,
 *   other pointer, unknown), carries a forward jump's state to its target (a direct-mapped table of
 *   GATE_JOIN_SLOTS pending targets), starts a function with what earlier calls passed it (and what
 *   callbacks get), resets to unknown where the state comes from code not scanned yet (a backward
 *   jump's or call's target, a forward target the table could not keep), and counts
 *     kernel_read  for a load through a BTF pointer, or through an unknown register in a program that
 *                  can hold one (BTF-typed type, kfunc call, helper returning a BTF pointer, BTF id, or,
 *                  known at lsm/bpf_prog, a used map that may hold kptrs: map->record, map-in-map);
 *     map_write    for a store, atomic or writing call through a map value, or through an unknown
 *                  register in a program that references a map;
 *     packet_write the same through a packet pointer, or an unknown register in a packet program type.
 *   A superset of the library's classes (equal on every fixture; the library also follows pointers
 *   across loops, out of subprograms and through a caller's stack). The policy check uses classes |
 *   maybe_classes. A load preempted on its CPU by another load's scan finds jump_targets taken over
 *   (owner changed) and counts the three by their preconditions alone (event scan_flags
 *   GATE_SCAN_CONTENDED).
 * - map rules: a program with map_write (proved or conservative) is taken to write every map it
 *   uses that programs can write (not BPF_F_RDONLY_PROG: .rodata, .kconfig); each must pass the
 *   rule (maps.named, then write any/own/none and pinned) with "own" meaning created by the same
 *   subject (exe, cgroup, uid) while the gate was attached. A map-in-map makes the write
 *   unattributed (its inner maps are not in used_maps), as does map_write with no writable map.
 * - attach target: the BTF name of attach_btf_id (fentry/fexit/fmod_ret/lsm/tp_btf/iter/ext), with
 *   bpf_lsm_ (lsm), btf_trace_ (tp_btf) and bpf_iter_ (iter) stripped as the library names them.
 *   kprobe, tracepoint and raw_tracepoint programs learn their target only at attach time: here they
 *   have none, so a rule with attach_targets refuses them (compiled::evaluate with attach_target
 *   None). An lsm program on a bpf* hook, or fmod_ret on bpf_lsm_bpf* / security_bpf*, could
 *   overrule the gate: it needs a rule that lists attach_targets (bpfgate::policy::gate_hook).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "bpfgate_catalogue.h" /* generated by build.rs: class bits, bpfgate_helper_classes */
#include "gate_scan.h"         /* generated by build.rs: tags, what helpers return and write */
#include "gate_progtypes.h"    /* generated by build.rs: btf_typed, packet_type, traced_type */
#include "gate.h"

#define EPERM 1

/* Instruction encoding (uapi linux/bpf_common.h and linux/bpf.h). */
#define INSN_CLASS(code) ((code) & 0x07)
#define INSN_MODE(code) ((code) & 0xe0)
#define INSN_LDX 0x01
#define INSN_ST 0x02
#define INSN_STX 0x03
#define INSN_MEM 0x60
#define INSN_MEMSX 0x80
#define INSN_ATOMIC 0xc0
#define INSN_CALL 0x85  /* BPF_JMP | BPF_CALL */
#define INSN_CALLX 0x8d /* BPF_JMP | BPF_CALL | BPF_X */
#define INSN_LD_IMM64 0x18 /* BPF_LD | BPF_IMM | BPF_DW */
#define PSEUDO_HELPER 0
#define PSEUDO_KFUNC_CALL 2
#define PSEUDO_MAP_FD 1
#define PSEUDO_MAP_VALUE 2
#define PSEUDO_BTF_ID 3
#define PSEUDO_MAP_IDX 5
#define PSEUDO_MAP_IDX_VALUE 6
#define REG_FP 10
#define HELPER_TAIL_CALL 12

/* Program types and attach types by kernel number. */
#define PT_CGROUP_SKB 8
#define PT_TRACING 26
#define PT_LSM 29
#define AT_TRACE_RAW_TP 23
#define AT_MODIFY_RETURN 26
#define AT_TRACE_ITER 28

/* Instructions copied per bpf_loop iteration, into the load's pending_loads entry. */
#define GATE_CHUNK 32

/* Scan flags. */
#define SCAN_BTF_SOURCE (1U << 0) /* a kfunc, a helper returning a BTF pointer, an ld_imm64 of a BTF id */
#define SCAN_MAP_REF (1U << 1)    /* an ld_imm64 of a map or map value */
#define SCAN_BLOCK_ENDS (1U << 2) /* the last instruction ended a block (exit, ja, gotox) */
#define SCAN_GOTOX (1U << 3)      /* an indirect jump: any instruction may start a block */
#define SCAN_CONTENDED (1U << 4)  /* another load took this CPU's jump_targets during the scan */
#define SCAN_FUNC_ADDR (1U << 5)  /* an ld_imm64 of a function: the program runs callbacks */

/* Instruction encoding the tags need. */
#define INSN_LD 0x00
#define INSN_ALU 0x04
#define INSN_JMP 0x05
#define INSN_JMP32 0x06
#define INSN_ALU64 0x07
#define INSN_EXIT 0x95
#define INSN_JA 0x05
#define INSN_JA32 0x06  /* gotol: the offset is in imm */
#define INSN_GOTOX 0x0d /* BPF_JMP | BPF_JA | BPF_X */
#define INSN_SIZE_DW 0x18
#define INSN_LDX_DW 0x79 /* BPF_LDX | BPF_MEM | BPF_DW */
#define INSN_ST_DW 0x7a  /* BPF_ST | BPF_MEM | BPF_DW */
#define INSN_STX_DW 0x7b /* BPF_STX | BPF_MEM | BPF_DW */
#define PSEUDO_CALL 1
#define PSEUDO_FUNC 4
#define ATOMIC_FETCH 0x01
#define ATOMIC_XCHG 0xe1
#define ATOMIC_CMPXCHG 0xf1
#define ATOMIC_LOAD_ACQ 0x100
#define ATOMIC_STORE_REL 0x110

struct raw_insn {
	__u8 code;
	__u8 regs; /* dst_reg in the low nibble, src_reg in the high one (little-endian bitfields) */
	__s16 off;
	__s32 imm;
};

/*
 * Scan state, in the load's pending_loads entry (per-CPU scratch could be clobbered by a preempting
 * load; the stack has no room). The tags are bpfgate::kernel_view's (gate_scan.h): what each register and 8-byte
 * stack slot may hold, tracked in order through the program (enter_insn says what a block starts with).
 */
/* The state forward jumps carry to `target` (0: a free entry; no forward jump reaches insn 0), joined. */
struct scan_join {
	__u64 slots[8];
	__u8 regs[16];
	__u32 target;
	__u32 reserved;
};

/* A module kfunc call's fd_array index and the BTF object id its fd held when the scan read it. */
#define GATE_KFUNC_BTFS 8

struct kfunc_btf {
	__s32 off;
	__u32 obj_id;
};

struct scan_ctx {
	__u64 insns; /* kernel address of prog->insnsi */
	__u64 slots[8]; /* a tag per byte: the 64 slots of the frame, r10-512 first */
	__u8 regs[16];  /* r0-r10; r11-r15 only keep a bad register field in bounds */
	/* What r1-r5 may hold where a function starts (kernel_view's Scan::args), and, from the first
	 * pass, what the helpers and kfuncs the program calls hand callbacks. */
	__u8 args[5];
	__u8 callbacks;
	__u8 reserved[2];
	__u32 len;
	__u32 scanned;
	__u32 prog_type;
	__u32 classes;
	__u32 flags;
	/* The last instruction, plus one (0: none), that loaded through a BTF pointer or an unknown
	 * register, or wrote through a map value, a packet or an unknown register. */
	__u32 btf_load;
	__u32 unknown_load;
	__u32 map_store;
	__u32 packet_store;
	__u32 unknown_store;
	__u32 evidence[GATE_CLASS_SLOTS];
	/* The load's attr->fd_array, and the module BTF objects its kfunc calls name, as the scan read them. */
	__u64 fd_array;
	__u32 kfunc_btf_cnt;
	struct kfunc_btf kfunc_btfs[GATE_KFUNC_BTFS];
};

/*
 * Where the scanned program's blocks start: bits per instruction, set by a first pass on jump and call
 * targets (words) and on backward ones (resets: the tags reset there); and the states forward jumps
 * carry to their targets. One per CPU (the loader sizes the map); owner says which load is using it,
 * so a load that finds another took it meanwhile (it was preempted on this CPU) does not trust them.
 */
struct jump_targets {
	__u64 owner;
	struct scan_join joins[GATE_JOIN_SLOTS]; /* forward targets' pending states, by target index */
	__u64 words[GATE_MAX_INSNS / 64];  /* jump targets */
	__u64 resets[GATE_MAX_INSNS / 64]; /* targets where the tags reset */
};

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

struct match_ctx {
	__u32 base;
	__u32 first;
	__u32 matched;
	__u32 reserved;
	const char *target; /* GATE_TARGET_LEN bytes */
};

char LICENSE[] SEC("license") = "GPL";

/* Which policy slot decisions read; the daemon flips it after filling the other slot. */
volatile __u32 gate_active_slot = 0;
/* Counters the daemon and the tests read. */
__u64 gate_decisions = 0;
__u64 gate_denials = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Events lost because the ring buffer was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_KFUNCS);
	__type(key, struct gate_kfunc_key);
	__type(value, __u64);
} kfunc_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS);
	__type(key, __u32);
	__type(value, struct gate_policy_header);
} policy_header SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_RULES);
	__type(key, __u32);
	__type(value, struct gate_rule);
} policy_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct gate_pattern);
} policy_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_MAP_NAMES);
	__type(key, __u32);
	__type(value, struct gate_map_pattern);
} policy_map_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_exe_key);
	__type(value, __u64);
} policy_exe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_cgroup_key);
	__type(value, __u64);
} policy_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_uid_key);
	__type(value, __u64);
} policy_uid SEC(".maps");

/*
 * Never read by the program. Updating a map-in-map makes the bpf() syscall wait for an RCU grace
 * period, so after flipping gate_active_slot the daemon updates this map to know that no decision
 * still reads the old slot before it rewrites it.
 */
struct sync_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct sync_inner);
} sync_rcu SEC(".maps");

static __always_inline __u64 bit_of(__u32 n)
{
	return n < 64 ? 1ULL << n : 0;
}

static __always_inline __u32 lowest_bit(__u64 m)
{
	__u32 n = 0;

	if (!(m & 0xffffffffULL)) { n += 32; m >>= 32; }
	if (!(m & 0xffffULL)) { n += 16; m >>= 16; }
	if (!(m & 0xffULL)) { n += 8; m >>= 8; }
	if (!(m & 0xfULL)) { n += 4; m >>= 4; }
	if (!(m & 0x3ULL)) { n += 2; m >>= 2; }
	if (!(m & 0x1ULL)) { n += 1; }
	return n;
}

static __always_inline bool has_prefix(const char *s, const char *prefix, int len)
{
	for (int i = 0; i < len; i++)
		if (s[i] != prefix[i])
			return false;
	return true;
}

/*
 * Copies the name of BTF type `id` of `btf` (following split BTF to its base) into out, named as the
 * library names targets from sections: lsm/file_open, tp_btf/sched_switch, iter/task.
 */
static __always_inline int btf_type_name(struct btf *btf, __u32 id, __u32 prog_type, __u32 attach_type, char *out)
{
	__u32 start, name_off, str_off;
	struct btf_type **types;
	struct btf_type *t = NULL;
	const char *strings;

	for (int i = 0; i < 3 && btf; i++) {
		if (id >= BPF_CORE_READ(btf, start_id))
			break;
		btf = BPF_CORE_READ(btf, base_btf);
	}
	if (!btf)
		return -1;
	start = BPF_CORE_READ(btf, start_id);
	if (id < start)
		return -1;
	types = BPF_CORE_READ(btf, types);
	if (bpf_probe_read_kernel(&t, sizeof(t), &types[id - start]) || !t)
		return -1;
	name_off = BPF_CORE_READ(t, name_off);
	for (int i = 0; i < 3 && btf; i++) {
		if (name_off >= BPF_CORE_READ(btf, start_str_off))
			break;
		btf = BPF_CORE_READ(btf, base_btf);
	}
	if (!btf)
		return -1;
	str_off = BPF_CORE_READ(btf, start_str_off);
	if (name_off < str_off)
		return -1;
	strings = BPF_CORE_READ(btf, strings);
	if (bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off)) < 0)
		return -1;
	/* Only for their own program kinds: fentry/bpf_lsm_file_open names the function itself. */
	if (prog_type == PT_LSM && has_prefix(out, "bpf_lsm_", 8))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 8);
	else if (prog_type == PT_TRACING && attach_type == AT_TRACE_RAW_TP && has_prefix(out, "btf_trace_", 10))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 10);
	else if (prog_type == PT_TRACING && attach_type == AT_TRACE_ITER && has_prefix(out, "bpf_iter_", 9))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 9);
	return 0;
}

static long match_target(__u64 i, void *data)
{
	struct match_ctx *m = data;
	__u32 idx = m->base + m->first + (__u32)i;
	struct gate_pattern *p = bpf_map_lookup_elem(&policy_targets, &idx);
	__u32 len;

	if (!p)
		return 1;
	len = p->len;
	if (len > GATE_TARGET_PATTERN_LEN)
		return 0;
	for (__u32 k = 0; k < GATE_TARGET_PATTERN_LEN; k++) {
		if (k >= len)
			break;
		if (p->text[k] != m->target[k])
			return 0;
	}
	if (p->kind == GATE_PATTERN_PREFIX || (p->kind == GATE_PATTERN_EXACT && m->target[len] == 0)) {
		m->matched = 1;
		return 1;
	}
	return 0;
}


struct facts {
	struct gate_subject subject;
	__u32 prog_type;
	__u32 attach_type;
	__u32 insn_cnt;
	__u32 classes; /* classes | maybe_classes: what the policy judges */
	__u32 maybe_classes;
	bool has_attach_type;
	bool has_target;
	bool gate_hook; /* attaches where it could overrule the gate (see gate_hook_target) */
	char target[GATE_TARGET_LEN];
};

struct verdict {
	__u64 generation;
	__u32 rule;
	__u32 reasons;
	__u8 decision;
	__u8 flags;
};

/* reason bits: bpfgate::policy::reason_bits */
#define R_NO_RULE (1U << 0)
#define R_RULE_DENIES (1U << 1)
#define R_PROG_TYPE (1U << 2)
#define R_ATTACH_TYPE (1U << 3)
#define R_ATTACH_TARGET (1U << 4)
#define R_INSNS (1U << 5)
#define R_CLASS (1U << 6)
#define R_MAP (1U << 7)

/* Action numbers: bpfgate::policy::Action::number */
#define A_ALLOW 0
#define A_DENY 1
#define A_AUDIT 2

#define FMODE_WRITE 0x2
#define BPF_F_RDONLY_PROG (1U << 7)
#define CMD_OBJ_GET 7
#define CMD_LINK_GET_FD_BY_ID 30

/*
 * Set by the daemon before load (read-only afterwards): the one process the gate's objects obey, by
 * tgid and executable (a pid reused after the daemon died is not the daemon).
 */
const volatile __u32 gate_daemon_tgid = 0;
const volatile __u64 gate_daemon_dev = 0;
const volatile __u64 gate_daemon_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_MAP_OWNERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct gate_map_owner);
} map_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PROTECTED);
	__type(key, struct gate_object_key);
	__type(value, __u32);
} gate_objects SEC(".maps");

/* The maps of one program as the map rules see them, gathered at lsm/bpf_prog. */
#define GATE_MAX_USED_MAPS 64
struct used_map {
	char name[GATE_NAME_LEN];
	__u32 id;
	__u8 own;
	__u8 pinned;
	__u8 reserved[2];
};

struct used_maps {
	__u32 count;
	bool unattributed; /* a map-in-map: writes may reach inner maps the gate cannot see */
	bool kptr;         /* a map may hold kptrs: kptr fields, or a map-in-map (bpfgate::MapDef::may_hold_kptr) */
	struct used_map maps[GATE_MAX_USED_MAPS];
};

/*
 * A load in flight, from lsm/bpf_prog_load to lsm/bpf_prog (or lsm/bpf_prog_free when the verifier
 * refuses it), keyed by its bpf_prog_aux address (aux survives the verifier's reallocations of the
 * program): the facts its final decision needs once the verifier has bound its maps. A map entry,
 * not stack or per-CPU scratch: it is too large for the stack, and LSM programs can be preempted
 * (another task's hook on the same CPU would overwrite a per-CPU buffer mid-decision). Task storage
 * would be natural, but 7.x kernels refuse to create it from these hooks.
 */
struct pending_load {
	__u32 load_decision;
	__u32 reserved;
	__u64 load_generation;
	struct facts facts;
	struct used_maps used;
	/* The scan's state and the chunk of instructions it reads: here, as the stack has no room for them. */
	struct scan_ctx scan;
	struct raw_insn scan_buf[GATE_CHUNK];
};

/* Loads in flight at once; when full, loads are denied (fail closed). */
#define GATE_MAX_PENDING 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PENDING);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pending_load);
} pending_loads SEC(".maps");

/*
 * Adds classes; each class's evidence is the first thing that proved it. Branch-free per class: the
 * scan runs this in a loop the verifier walks, and every branch here would multiply its states. Out
 * of line, so the scan loop does not keep 13 evidence words in registers and spill them.
 */
static __noinline void note(struct scan_ctx *c, __u32 cls, __u32 ev)
{
	__u32 fresh = cls & ~c->classes;

	c->classes |= cls;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < BPFGATE_CLASS_COUNT; k++) {
		__u32 m = -((fresh >> k) & 1);

		c->evidence[k] = (ev & m) | (c->evidence[k] & ~m);
	}
}

static __always_inline __u8 *slot_bytes(struct scan_ctx *c)
{
	return (__u8 *)c->slots;
}

/* A frame offset's slot (0-63), or -1 outside the frame. */
static __always_inline int slot_of(__s64 off)
{
	return off >= -512 && off < 0 ? (int)((off + 512) >> 3) : -1;
}

/* OR-joins the tags `from` into `to` (same layout in scan_ctx and scan_join). */
static __always_inline void join_tags(__u64 *to_slots, __u8 *to_regs, const __u64 *from_slots, const __u8 *from_regs)
{
	__u64 r0, r1;

	for (int k = 0; k < 8; k++)
		to_slots[k] |= from_slots[k];
	__builtin_memcpy(&r0, from_regs, 8);
	__builtin_memcpy(&r1, from_regs + 8, 8);
	((__u64 *)to_regs)[0] |= r0;
	((__u64 *)to_regs)[1] |= r1;
}

/*
 * Instruction `at`'s entry state (kernel_view::Scan::enter): every tag unknown at a reset (a backward
 * jump's or call's target, a forward one the join table could not keep, every insn after a gotox); the
 * pending state of the forward jumps to it, joined with the fall-through's unless the block ended; a
 * function's where a block starts that no jump reaches (a subprogram, dead code).
 */
static __always_inline void enter_insn(struct scan_ctx *c, struct jump_targets *jt, __u32 at, bool target, bool gotox)
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
		c->regs[REG_FP] = GATE_T_STACK;
		__builtin_memset(c->slots, GATE_T_ANY, sizeof(c->slots));
	} else if (ended && !hit) {
		/* A function's start: its arguments, a fresh frame. */
		__builtin_memset(c->regs, GATE_T_SCALAR, sizeof(c->regs));
		__builtin_memcpy(&c->regs[1], c->args, sizeof(c->args));
		c->regs[REG_FP] = GATE_T_STACK;
		__builtin_memset(c->slots, GATE_T_SCALAR, sizeof(c->slots));
	} else if (hit && ended) {
		__builtin_memcpy(c->slots, e->slots, sizeof(c->slots));
		__builtin_memcpy(c->regs, e->regs, sizeof(c->regs));
	} else if (hit) {
		join_tags(c->slots, c->regs, e->slots, e->regs);
	}
}

/*
 * A jump from `at` to `t` (kernel_view::Scan::jump): a forward target gets the current state, joined in
 * its entry; when the entry holds another pending target, `t` is marked to start unknown instead.
 */
static __always_inline void jump_tags(struct scan_ctx *c, struct jump_targets *jt, __u32 at, __s64 t)
{
	if (t <= at || t >= c->len || t >= GATE_MAX_INSNS)
		return;
	struct scan_join *e = &jt->joins[t & (GATE_JOIN_SLOTS - 1)];

	if (e->target == t) {
		join_tags(e->slots, e->regs, c->slots, c->regs);
	} else if (!e->target) {
		__builtin_memcpy(e->slots, c->slots, sizeof(c->slots));
		__builtin_memcpy(e->regs, c->regs, sizeof(c->regs));
		e->target = t;
	} else {
		set_insn_bit(jt->resets, t);
	}
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

		if (base == REG_FP) {
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

static __always_inline void store_tag(struct scan_ctx *c, __u32 at, __u8 base, __s16 off, __u32 size, __u8 value)
{
	__u8 b = c->regs[base & 0xf];

	written(c, at, b);
	if (!(b & (GATE_T_STACK | GATE_T_UNKNOWN)))
		return;
	if (base != REG_FP) {
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

/*
 * The BTF object a module kfunc call names: its off indexes the load's fd_array (user memory, or kernel
 * memory for a load from the kernel), whose fd this task holds. The verifier reads fd_array again later,
 * so lsm/bpf_prog checks the objects it bound against these (kfunc_btfs_changed). 0 when unreadable, or
 * past GATE_KFUNC_BTFS distinct indexes: the call is then unknown.
 */
__noinline __u32 gate_module_btf(struct scan_ctx *c, __s32 off)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *file = NULL;
	struct file **fds;
	struct fdtable *fdt;
	struct btf *btf;
	__s32 fd = -1;
	__u32 n, id;

	if (!c || off <= 0 || !c->fd_array)
		return 0;
	n = c->kfunc_btf_cnt;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < GATE_KFUNC_BTFS; k++) {
		if (k >= n)
			break;
		if (c->kfunc_btfs[k].off == off)
			return c->kfunc_btfs[k].obj_id;
	}
	if (n >= GATE_KFUNC_BTFS)
		return 0;
	const void *slot = (const void *)(c->fd_array + (__u64)off * sizeof(fd));

	if (bpf_probe_read_user(&fd, sizeof(fd), slot) && bpf_probe_read_kernel(&fd, sizeof(fd), slot))
		return 0;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0;
	/* Not checked to be a BTF fd: if it is not, the verifier refuses the load or binds another object. */
	btf = BPF_CORE_READ(file, private_data);
	id = btf ? BPF_CORE_READ(btf, id) : 0;
	if (!id)
		return 0;
	c->kfunc_btfs[n & (GATE_KFUNC_BTFS - 1)].off = off;
	c->kfunc_btfs[n & (GATE_KFUNC_BTFS - 1)].obj_id = id;
	c->kfunc_btf_cnt = n + 1;
	return id;
}

static __always_inline void scan_call(struct scan_ctx *c, __u8 src, __s16 off, __s32 imm, __u32 at)
{
	if (src == PSEUDO_HELPER) {
		__u32 id = (__u32)imm;

		if (id < BPFGATE_HELPER_COUNT) {
			__u32 k = id & (BPFGATE_HELPER_TABLE - 1);
			__u8 ret = bpfgate_helper_ret[k];

			if (ret & GATE_T_BTF)
				c->flags |= SCAN_BTF_SOURCE;
			note(c, bpfgate_helper_classes[id], GATE_EV_HELPER | (id & GATE_EV_VALUE_MASK));
			known_call(c, at, ret, bpfgate_helper_flags[k]);
		} else {
			note(c, BPFGATE_CLASS_UNKNOWN, GATE_EV_HELPER | (id & GATE_EV_VALUE_MASK));
			unknown_call(c, at);
		}
	} else if (src == PSEUDO_KFUNC_CALL) {
		struct gate_kfunc_key key = { .btf_id = (__u32)imm };
		__u64 *found = NULL;

		/* vmlinux's kfuncs by id; a module's by its BTF object too (none if its fd cannot be read). */
		if (off == 0 || (key.btf_obj = gate_module_btf(c, off)))
			found = bpf_map_lookup_elem(&kfunc_classes, &key);
		c->flags |= SCAN_BTF_SOURCE; /* kfuncs trade in BTF pointers */
		if (found) {
			__u64 v = *found;

			note(c, (__u32)v & BPFGATE_CLASS_ALL,
			     GATE_EV_KFUNC | GATE_EV_CATALOGUED | ((v >> GATE_KFUNC_INDEX_SHIFT) & (GATE_EV_CATALOGUED - 1)));
			known_call(c, at, v >> GATE_KFUNC_RET_SHIFT, v >> GATE_KFUNC_FLAGS_SHIFT);
		} else {
			/* Not catalogued: unknown, and it could write anything. */
			note(c, BPFGATE_CLASS_UNKNOWN, GATE_EV_KFUNC | (key.btf_id & (GATE_EV_CATALOGUED - 1)));
			unknown_call(c, at);
		}
	} else if (src == PSEUDO_CALL) {
		/* A subprogram: it starts with these arguments (a pointer to this frame is none to its own), and
		 * could store anything through a stack pointer it is handed. */
		for (int r = 1; r <= 5; r++) {
			__u8 t = c->regs[r];

			c->args[r - 1] |= t & GATE_T_STACK ? (t & ~GATE_T_STACK) | GATE_T_UNKNOWN : t;
		}
		call_tags(c, GATE_T_ANY, true);
	}
}

static __always_inline void scan_atomic(struct scan_ctx *c, __u8 dst, __u8 src, __s16 off, __s32 op, __u32 size,
					__u32 at)
{
	bool dw = size == 8;
	__u8 old;

	if (op == ATOMIC_LOAD_ACQ) {
		c->regs[dst] = load_tag(c, at, src, off, dw, false);
	} else if (op == ATOMIC_STORE_REL) {
		store_tag(c, at, dst, off, size, c->regs[src]);
	} else if (op == ATOMIC_XCHG || op == ATOMIC_CMPXCHG) {
		old = load_tag(c, at, dst, off, dw, false);
		store_tag(c, at, dst, off, size, c->regs[src]);
		c->regs[op == ATOMIC_XCHG ? src : 0] = old;
	} else if (op & ATOMIC_FETCH) {
		old = load_tag(c, at, dst, off, dw, false);
		store_tag(c, at, dst, off, size, GATE_T_SCALAR);
		c->regs[src] = old;
	} else {
		store_tag(c, at, dst, off, size, GATE_T_SCALAR);
	}
}

static __always_inline __u8 ld_imm64_tag(struct scan_ctx *c, __u8 src)
{
	if (src == PSEUDO_BTF_ID) {
		c->flags |= SCAN_BTF_SOURCE;
		return GATE_T_BTF | GATE_T_SCALAR;
	}
	if (src == PSEUDO_MAP_FD || src == PSEUDO_MAP_IDX) {
		c->flags |= SCAN_MAP_REF;
		return GATE_T_OTHER;
	}
	if (src == PSEUDO_MAP_VALUE || src == PSEUDO_MAP_IDX_VALUE) {
		c->flags |= SCAN_MAP_REF;
		return GATE_T_MAP_VALUE;
	}
	return src == PSEUDO_FUNC ? GATE_T_OTHER : GATE_T_SCALAR;
}

static __always_inline __u8 alu64_tag(__u8 code, __u8 d, __u8 s, __s16 off)
{
	bool x = code & 0x08;
	__u8 op = code & 0xf0;

	if (!x)
		s = GATE_T_SCALAR;
	if (op == 0xb0) /* mov; movsx and addr_space_cast (off 1: an arena pointer) when off is set */
		return x && off == 1 ? GATE_T_ANY : off == 0 ? s : GATE_T_SCALAR;
	if (op == 0x80 || op == 0xd0) /* neg, bswap */
		return GATE_T_SCALAR;
	if (op == 0x00 || op == 0x10) /* add, sub: a pointer moves */
		return d | s;
	/* Other arithmetic on a pointer keeps its provenance, conservatively (the library's rule). */
	return d | s | GATE_T_SCALAR;
}

/* An ALU instruction: only its destination's tag changes. */
static __always_inline void alu_tag(struct scan_ctx *c, __u8 code, __u8 dst, __u8 src, __s16 off)
{
	if (INSN_CLASS(code) == INSN_ALU)
		c->regs[dst] = GATE_T_SCALAR;
	else
		c->regs[dst] = alu64_tag(code, c->regs[dst], c->regs[src], off);
}

/* A jump whose target is in off (imm for ja32): every JMP/JMP32 instruction but call, callx, exit and gotox. */
static __always_inline bool has_target(__u8 code)
{
	__u8 cls = INSN_CLASS(code);

	return (cls == INSN_JMP || cls == INSN_JMP32) && code != INSN_CALL && code != INSN_CALLX &&
	       code != INSN_EXIT && code != INSN_GOTOX;
}

/*
 * One instruction of the second pass: bpfgate::kernel_view::scan, step for step. A global function:
 * the verifier checks it once, with an unknown scan_ctx, not once per state of the chunk loop.
 */
__noinline int gate_scan_insn(struct scan_ctx *c, struct jump_targets *jt, __u64 raw, __u32 at, __u32 target)
{
	if (!c || !jt)
		return 0;
	__u8 code = raw & 0xff;
	__u8 dst = (raw >> 8) & 0x0f;
	__u8 src = (raw >> 12) & 0x0f;
	__s16 off = (__s16)(raw >> 16);
	__s32 imm = (__s32)(raw >> 32);
	__u8 cls = INSN_CLASS(code);
	__u8 mode = INSN_MODE(code);
	__u32 size = (code & INSN_SIZE_DW) == INSN_SIZE_DW ? 8 : (code & 0x18) == 0x08 ? 2 : (code & 0x18) == 0x10 ? 1 : 4;

	if (target || (c->flags & (SCAN_BLOCK_ENDS | SCAN_GOTOX)))
		enter_insn(c, jt, at, target, c->flags & SCAN_GOTOX);

	if (has_target(code)) {
		jump_tags(c, jt, at, (__s64)at + 1 + (code == INSN_JA32 ? imm : off));
		if (code == INSN_JA || code == INSN_JA32)
			c->flags |= SCAN_BLOCK_ENDS;
	} else if (cls == INSN_JMP || cls == INSN_JMP32) {
		if (code == INSN_EXIT || code == INSN_GOTOX)
			c->flags |= SCAN_BLOCK_ENDS;
		else if (code == INSN_CALL)
			scan_call(c, src, off, imm, at);
		else if (code == INSN_CALLX) {
			/* An indirect call could reach anything (the verifier refuses it; the library says unknown). */
			note(c, BPFGATE_CLASS_UNKNOWN, GATE_EV_INSN | (at & GATE_EV_VALUE_MASK));
			unknown_call(c, at);
		}
	} else if (code == INSN_LD_IMM64) {
		c->regs[dst] = ld_imm64_tag(c, src);
	} else if (cls == INSN_LD && (mode == 0x20 || mode == 0x40)) {
		/* LD_ABS, LD_IND: r0 is packet data, r1-r5 are clobbered. */
		__builtin_memset(c->regs, GATE_T_SCALAR, 6);
	} else if (cls == INSN_LDX && (mode == INSN_MEM || mode == INSN_MEMSX)) {
		c->regs[dst] = load_tag(c, at, src, off, size == 8, mode == INSN_MEMSX);
	} else if ((cls == INSN_ST || cls == INSN_STX) && mode == INSN_MEM) {
		store_tag(c, at, dst, off, size, cls == INSN_ST ? GATE_T_SCALAR : c->regs[src]);
	} else if (cls == INSN_STX && mode == INSN_ATOMIC) {
		scan_atomic(c, dst, src, off, imm, size, at);
	} else if (cls == INSN_ALU || cls == INSN_ALU64) {
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
		if (INSN_CLASS(code) != INSN_JMP && INSN_CLASS(code) != INSN_JMP32) {
			if (code == INSN_LD_IMM64 && src == PSEUDO_FUNC)
				c->flags |= SCAN_FUNC_ADDR;
			continue;
		}
		if (code == INSN_CALL && src == PSEUDO_HELPER) {
			c->callbacks |= (__u32)imm < BPFGATE_HELPER_COUNT
						? bpfgate_helper_callback[imm & (BPFGATE_HELPER_TABLE - 1)]
						: GATE_T_ANY;
			continue;
		}
		/* A kfunc: what it hands a callback is not looked up. */
		if (code == INSN_CALL && src == PSEUDO_KFUNC_CALL)
			c->callbacks = GATE_T_ANY;
		if (code == INSN_GOTOX)
			c->flags |= SCAN_GOTOX;
		if (!has_target(code) && !(code == INSN_CALL && src == PSEUDO_CALL))
			continue;
		/* A jump's target, or a called function's first instruction. */
		__s64 t = (__s64)(chunk * GATE_CHUNK + j) + 1 +
			  (code == INSN_JA32 || code == INSN_CALL ? imm : ts->scan_buf[j].off);

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

/* Second pass, one chunk: the tags and classes. */
__noinline int gate_scan_chunk(struct pending_load *ts, struct jump_targets *jt, __u64 chunk)
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
		__u32 at = chunk * GATE_CHUNK + j;
		__u32 target = insn_bit(jt->words, at);
		__u8 code = ts->scan_buf[j].code;
		__u64 raw;

		/*
		 * Inside a block (no reset, no pending jump state, no block end before it), ALU instructions,
		 * conditional jumps and spills and fills are done here: the call to gate_scan_insn costs more
		 * than what they do (it is a global function so that the verifier checks its many branches
		 * once).
		 */
		if (!target && !(c->flags & (SCAN_BLOCK_ENDS | SCAN_GOTOX))) {
			if (INSN_CLASS(code) == INSN_ALU || INSN_CLASS(code) == INSN_ALU64) {
				alu_tag(c, code, ts->scan_buf[j].regs & 0x0f, ts->scan_buf[j].regs >> 4,
					ts->scan_buf[j].off);
				continue;
			}
			if (has_target(code) && code != INSN_JA && code != INSN_JA32) {
				jump_tags(c, jt, at, (__s64)at + 1 + ts->scan_buf[j].off);
				continue;
			}
			/*
			 * An 8-byte spill or fill at an aligned slot of the frame, the commonest memory
			 * access: what store_tag and load_tag do for it (no class, one slot or register).
			 */
			__s16 off = ts->scan_buf[j].off;
			__u8 r = ts->scan_buf[j].regs;
			bool spill = (code == INSN_STX_DW || code == INSN_ST_DW) && (r & 0x0f) == REG_FP;

			if ((spill || (code == INSN_LDX_DW && r >> 4 == REG_FP)) && c->regs[REG_FP] == GATE_T_STACK &&
			    off >= -512 && off < 0 && !(off & 7)) {
				__u8 *slot = &slot_bytes(c)[((off + 512) >> 3) & 63];

				if (spill) {
					*slot = code == INSN_ST_DW ? GATE_T_SCALAR : c->regs[r >> 4];
				} else {
					__u8 v = *slot;

					c->regs[r & 0x0f] = v ? v : GATE_T_SCALAR;
				}
				continue;
			}
		}
		__builtin_memcpy(&raw, &ts->scan_buf[j], sizeof(raw));
		gate_scan_insn(c, jt, raw, at, target);
	}
	c->scanned = chunk * GATE_CHUNK + n;
	return 0;
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
 * Counts a class (one bit) the tags found, unless a call proved it: `found` is the last access through
 * the class's tag, `unknown` the last through an unknown register where that could be the class.
 * Evidence is the later of the two.
 */
static __always_inline void maybe_class(struct scan_ctx *c, __u32 *maybe, __u32 cls, __u32 found, __u32 unknown)
{
	__u32 at = found > unknown ? found : unknown;
	int slot = __builtin_ctz(cls);

	if (at && !(c->classes & cls) && slot >= 0 && slot < GATE_CLASS_SLOTS) {
		*maybe |= cls;
		c->evidence[slot] = GATE_EV_INSN | ((at - 1) & GATE_EV_VALUE_MASK);
	}
}

/*
 * Programs loaded while the gate was attached, by bpf_prog_aux address: what their load was judged by
 * and who loaded them (gate_prog_open). When full, loads under an enforced policy are denied.
 */
#define GATE_MAX_PROGS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PROGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct facts);
} loaded_progs SEC(".maps");

/* All zeros, never written: the initial value of a pending_loads entry (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending_load);
} pending_zero SEC(".maps");

/*
 * Threads inside BPF_OBJ_GET, noted by lsm/bpf for lsm/bpf_map (a map reached through a pin is marked
 * pinned). LRU: threads come and go; an evicted entry only loses a pinned mark.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} thread_cmds SEC(".maps");

static __always_inline void finish(struct verdict *v, __u8 decision, __u32 rule, __u32 reasons, bool audit_mode)
{
	v->decision = (audit_mode && decision == GATE_DENY) ? GATE_AUDIT : decision;
	v->rule = rule;
	v->reasons = reasons;
}

/* The policy's default action, for a subject no rule matches. */
static __always_inline void finish_default(struct verdict *v, const struct gate_policy_header *h, bool audit_mode)
{
	if (h->default_action == A_ALLOW)
		finish(v, GATE_ALLOW, GATE_RULE_DEFAULT, 0, audit_mode);
	else if (h->default_action == A_AUDIT)
		finish(v, GATE_AUDIT, GATE_RULE_DEFAULT, R_NO_RULE, audit_mode);
	else
		finish(v, GATE_DENY, GATE_RULE_DEFAULT, R_NO_RULE, audit_mode);
}

/* A request for one of the gate's own objects by anyone but its daemon: refused. */
static __always_inline void refuse_gate_object(struct verdict *v)
{
	v->decision = GATE_DENY;
	v->rule = GATE_RULE_DEFAULT;
	v->reasons = GATE_R_GATE_OBJECT;
	v->flags = GATE_F_GATE_OBJECT;
}

/* The loading task: executable, cgroup, real uid. */
static __always_inline void current_subject(struct gate_subject *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *exe_file = BPF_CORE_READ(task, mm, exe_file);

	s->uid = (__u32)bpf_get_current_uid_gid();
	s->cgroup_id = bpf_get_current_cgroup_id();
	if (exe_file) {
		s->exe_ino = BPF_CORE_READ(exe_file, f_inode, i_ino);
		s->exe_dev = BPF_CORE_READ(exe_file, f_inode, i_sb, s_dev);
	}
}

static __always_inline bool same_subject(const struct gate_subject *a, const struct gate_subject *b)
{
	return a->exe_dev == b->exe_dev && a->exe_ino == b->exe_ino && a->cgroup_id == b->cgroup_id &&
	       a->uid == b->uid;
}

static __always_inline bool is_daemon(void)
{
	struct gate_subject s = {};

	if (!gate_daemon_tgid || (bpf_get_current_pid_tgid() >> 32) != gate_daemon_tgid)
		return false;
	current_subject(&s);
	return s.exe_dev == gate_daemon_dev && s.exe_ino == gate_daemon_ino;
}

static __always_inline bool gate_object(__u32 kind, __u32 id)
{
	struct gate_object_key k = { .kind = kind, .id = id };

	return id && bpf_map_lookup_elem(&gate_objects, &k);
}

/* The policy in force and the rule for a subject (compiled::evaluate's first half). */
struct rule_match {
	struct gate_policy_header *h;
	struct gate_rule *r; /* NULL: no rule matched, the default decides */
	__u32 slot;
	__u32 id;
};

/* Out of line: its map keys get their own stack frame. Returns false when no valid policy is installed. */
static __noinline bool match_rule(const struct gate_subject *s, struct rule_match *out)
{
	__u32 slot = gate_active_slot & 1; /* read once: the whole decision uses one generation */
	struct gate_policy_header *h = bpf_map_lookup_elem(&policy_header, &slot);
	__u64 valid, exe = 0, cg = 0, uid = 0, cand, *m;

	out->r = NULL;
	out->id = GATE_RULE_DEFAULT;
	out->slot = slot;
	if (!h || h->magic != GATE_POLICY_MAGIC || h->format_version != GATE_POLICY_FORMAT)
		return false;
	out->h = h;
	valid = h->rule_count >= GATE_MAX_RULES ? ~0ULL : (1ULL << h->rule_count) - 1;

	struct gate_exe_key ek = { .slot = slot, .dev = s->exe_dev, .ino = s->exe_ino };
	m = bpf_map_lookup_elem(&policy_exe, &ek);
	if (m)
		exe = *m;
	exe |= h->exe_any;

	/* The task's cgroup and its ancestors, from the root (level 0) down. */
	for (int level = 0; level < GATE_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			break;
		struct gate_cgroup_key ck = { .slot = slot, .id = id };
		m = bpf_map_lookup_elem(&policy_cgroup, &ck);
		if (m)
			cg |= *m;
	}
	cg |= h->cgroup_any;

	struct gate_uid_key uk = { .slot = slot, .uid = s->uid };
	m = bpf_map_lookup_elem(&policy_uid, &uk);
	if (m)
		uid = *m;
	uid |= h->uid_any;

	cand = exe & cg & uid & valid;
	if (cand) {
		out->id = lowest_bit(cand);
		__u32 ridx = slot * GATE_MAX_RULES + out->id;
		out->r = bpf_map_lookup_elem(&policy_rules, &ridx);
		if (!out->r)
			out->id = GATE_RULE_DEFAULT; /* cannot happen: ids are below GATE_MAX_RULES */
	}
	return true;
}

struct map_check {
	const struct used_maps *um;
	struct gate_rule *r;
	__u32 slot;
	__u32 bad; /* index + 1 of the first map the rule refuses */
};

/* Whether map name `name` matches one of the rule's maps.named patterns. */
struct name_ctx {
	const char *name;
	__u32 base;
	__u32 matched;
};

static long match_map_name(__u64 i, void *data)
{
	struct name_ctx *n = data;
	__u32 idx = n->base + (__u32)i;
	struct gate_map_pattern *p = bpf_map_lookup_elem(&policy_map_names, &idx);
	__u32 len;

	if (!p)
		return 1;
	len = p->len;
	if (len > GATE_NAME_LEN - 1)
		return 0;
	for (__u32 k = 0; k < GATE_NAME_LEN - 1; k++) {
		if (k >= len)
			break;
		if (p->text[k] != n->name[k])
			return 0;
	}
	if (p->kind == GATE_PATTERN_PREFIX || (p->kind == GATE_PATTERN_EXACT && n->name[len & 15] == 0)) {
		n->matched = 1;
		return 1;
	}
	return 0;
}

/* Whether a rule lets a program write map `m` (compiled::evaluate's written-map check). */
static __always_inline bool map_write_ok(struct gate_rule *r, __u32 slot, const struct used_map *m)
{
	bool pinned_ok = r->flags & GATE_RULE_PINNED_OK;
	struct name_ctx n = { .name = m->name, .base = slot * GATE_MAX_MAP_NAMES + r->map_first };

	bpf_loop(r->map_count, match_map_name, &n, 0);
	if (n.matched)
		return true;
	if (r->map_write == 0)
		return pinned_ok || !m->pinned;
	if (r->map_write == 1)
		return m->own && (pinned_ok || !m->pinned);
	return false;
}

static long check_used_map(__u64 i, void *data)
{
	struct map_check *mc = data;

	if (i >= GATE_MAX_USED_MAPS)
		return 1;
	if (!map_write_ok(mc->r, mc->slot, &mc->um->maps[i])) {
		mc->bad = (__u32)i + 1;
		return 1;
	}
	return 0;
}

/*
 * The first steps of compiled::evaluate, for a load or a map open by subject `s`: without a policy,
 * allow; without a matching rule, the default (deny for a program on the gate's own hooks, which
 * needs a rule that names its target); a deny rule denies. Returns whether rm->r still has to judge.
 */
static __always_inline bool rule_for(const struct gate_subject *s, struct verdict *v, struct rule_match *rm,
				     bool gate_hook)
{
	bool audit_mode;

	if (!match_rule(s, rm) || !rm->h) {
		v->flags |= GATE_F_NO_POLICY;
		v->rule = GATE_RULE_DEFAULT;
		v->decision = GATE_ALLOW;
		return false;
	}
	v->generation = rm->h->generation;
	audit_mode = rm->h->mode == 1;
	if (audit_mode)
		v->flags |= GATE_F_AUDIT_MODE;
	if (!rm->r) {
		if (gate_hook)
			finish(v, GATE_DENY, GATE_RULE_DEFAULT, R_NO_RULE | R_ATTACH_TARGET, audit_mode);
		else
			finish_default(v, rm->h, audit_mode);
		return false;
	}
	if (rm->r->action == A_DENY || rm->r->action > A_AUDIT) {
		finish(v, GATE_DENY, rm->id, R_RULE_DENIES, audit_mode);
		return false;
	}
	return true;
}

/*
 * compiled::evaluate, step by step. `um` is NULL at lsm/bpf_prog_load, where the verifier has not
 * yet bound the program's maps: the map rules are then left to lsm/bpf_prog. `bad_map` receives
 * the index + 1 of the first map a rule refused. A global function: the verifier checks it once, on
 * its own, instead of once per state of each caller.
 */
__noinline int gate_evaluate(const struct facts *f, const struct gate_subject *s, struct verdict *v,
			     const struct used_maps *um, __u32 *bad_map)
{
	struct rule_match rm = {};

	if (!f || !s || !v || !bad_map)
		return 0;
	if (!rule_for(s, v, &rm, f->gate_hook))
		return 0;
	struct gate_rule *r = rm.r;
	bool audit_mode = v->flags & GATE_F_AUDIT_MODE;
	__u32 id = rm.id;
	__u32 reasons = 0;

	if ((r->flags & GATE_RULE_PROG_TYPES) && !(r->prog_types & bit_of(f->prog_type)))
		reasons |= R_PROG_TYPE;
	if (f->has_attach_type && (r->flags & GATE_RULE_ATTACH_TYPES) && !(r->attach_types & bit_of(f->attach_type)))
		reasons |= R_ATTACH_TYPE;
	if (r->flags & GATE_RULE_ATTACH_TARGETS) {
		bool ok;

		if (f->has_target) {
			/* bpf_loop's context must be on this function's stack. */
			struct match_ctx lm = {
				.base = rm.slot * GATE_MAX_TARGETS,
				.first = r->target_first,
				.target = f->target,
			};

			bpf_loop(r->target_count, match_target, &lm, 0);
			ok = lm.matched;
		} else {
			ok = !traced_type(f->prog_type);
		}
		if (!ok)
			reasons |= R_ATTACH_TARGET;
	} else if (f->gate_hook) {
		reasons |= R_ATTACH_TARGET;
	}
	if (f->insn_cnt > r->max_insns)
		reasons |= R_INSNS;
	if ((f->classes & r->denied_classes) || (f->classes & ~r->allowed_classes))
		reasons |= R_CLASS;
	if (um && (f->classes & BPFGATE_CLASS_MAP_WRITE)) {
		bool pinned_ok = r->flags & GATE_RULE_PINNED_OK;
		__u32 n = um->count < GATE_MAX_USED_MAPS ? um->count : GATE_MAX_USED_MAPS;
		struct map_check chk = { .um = um, .r = r, .slot = rm.slot };

		/* Every map the program can write is taken as written: the gate does not track which. */
		bpf_loop(n, check_used_map, &chk, 0);
		if (chk.bad) {
			reasons |= R_MAP;
			*bad_map = chk.bad;
		}
		if ((um->unattributed || n == 0) && (r->map_write != 0 || !pinned_ok))
			reasons |= R_MAP;
	}

	if (r->action == A_AUDIT)
		finish(v, GATE_AUDIT, id, reasons, audit_mode);
	else
		finish(v, reasons ? GATE_DENY : GATE_ALLOW, id, reasons, audit_mode);
	return 0;
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

	if (n)
		*n += 1; /* per-CPU slot: no other writer */
}

/* Reserves an event with the fields every operation has; NULL (counted) when the ring buffer is full. */
static __always_inline struct gate_event *new_event(__u32 op, const struct gate_subject *s, const struct verdict *v)
{
	struct gate_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	__sync_fetch_and_add(&gate_decisions, 1);
	if (v->decision == GATE_DENY)
		__sync_fetch_and_add(&gate_denials, 1);
	if (!e) {
		count_drop();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->generation = v->generation;
	e->exe_dev = s->exe_dev;
	e->exe_ino = s->exe_ino;
	e->cgroup_id = s->cgroup_id;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->uid = s->uid;
	e->op = op;
	e->reasons = v->reasons;
	e->rule = v->rule;
	e->verdict = v->decision;
	e->flags = v->flags | (v->decision == GATE_DENY ? GATE_F_ENFORCED : 0);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/*
 * lsm/bpf_prog_load and lsm/bpf_prog share these facts: a program on a hook where it could overrule
 * the gate (an lsm program on a bpf* hook, fmod_ret on bpf_lsm_bpf* or security_bpf*) needs a rule
 * that lists its target (bpfgate::policy::gate_hook).
 */
static __always_inline bool gate_hook_target(__u32 prog_type, __u32 attach_type, const char *t)
{
	if (prog_type == PT_LSM)
		return has_prefix(t, "bpf", 3);
	if (prog_type == PT_TRACING && attach_type == AT_MODIFY_RETURN)
		return has_prefix(t, "bpf_lsm_bpf", 11) || has_prefix(t, "security_bpf", 12);
	return false;
}

/* What an event about a load or a loaded program says of the program. */
static __always_inline void event_program(struct gate_event *e, const struct facts *f, struct bpf_prog_aux *aux)
{
	e->prog_type = f->prog_type;
	e->attach_type = f->attach_type;
	e->insn_cnt = f->insn_cnt;
	e->classes = f->classes & ~f->maybe_classes;
	e->maybe_classes = f->maybe_classes;
	if (bpf_probe_read_kernel(e->name, sizeof(e->name), &aux->name))
		e->name[0] = 0;
	__builtin_memcpy(e->target, f->target, sizeof(e->target));
}

static __always_inline int gate_prog_load(struct bpf_prog *prog, union bpf_attr *attr, bool kernel)
{
	struct verdict v = {};
	struct bpf_prog_aux *aux = BPF_CORE_READ(prog, aux);
	__u64 key = (__u64)aux;
	__u32 maybe = 0, no_map = 0, zero = 0;
	struct pending_load *zeros = bpf_map_lookup_elem(&pending_zero, &zero);
	struct pending_load *ts = NULL;

	if (zeros && !bpf_map_update_elem(&pending_loads, &key, zeros, BPF_ANY))
		ts = bpf_map_lookup_elem(&pending_loads, &key);
	if (!ts) {
		/* Fail closed: no room to record the load for its final decision. */
		struct gate_subject s = {};

		current_subject(&s);
		v.decision = GATE_DENY;
		v.rule = GATE_RULE_DEFAULT;
		struct gate_event *e = new_event(GATE_OP_PROG_LOAD, &s, &v);

		if (e) {
			e->prog_type = BPF_CORE_READ(prog, type);
			bpf_ringbuf_submit(e, 0);
		}
		return -EPERM;
	}
	struct facts *f = &ts->facts;
	struct scan_ctx *sc = &ts->scan;

	current_subject(&f->subject);
	f->prog_type = BPF_CORE_READ(prog, type);
	f->attach_type = BPF_CORE_READ(prog, expected_attach_type);
	f->insn_cnt = BPF_CORE_READ(prog, len);
	/* Attach type 0 (cgroup_inet_ingress) is only meaningful for cgroup_skb; elsewhere it means none. */
	f->has_attach_type = f->attach_type != 0 || f->prog_type == PT_CGROUP_SKB;

	/*
	 * The classes: scan prog->insnsi in chunks. The address comes from aux->prog through a probe read,
	 * so it is a scalar: the verifier refuses variable offsets on the trusted prog pointer.
	 */
	sc->insns = (__u64)BPF_CORE_READ(aux, prog) + bpf_core_field_offset(struct bpf_prog, insnsi);
	sc->len = f->insn_cnt < GATE_MAX_INSNS ? f->insn_cnt : GATE_MAX_INSNS;
	sc->prog_type = f->prog_type;
	sc->fd_array = BPF_CORE_READ(attr, fd_array);
	__builtin_memset(sc->regs, GATE_T_SCALAR, sizeof(sc->regs));
	sc->regs[1] = GATE_T_CTX;
	sc->regs[REG_FP] = GATE_T_STACK;
	__builtin_memset(sc->slots, GATE_T_SCALAR, sizeof(sc->slots));

	__u32 cpu = bpf_get_smp_processor_id();
	struct jump_targets *jt = bpf_map_lookup_elem(&jump_targets, &cpu);
	bool contended = true;

	if (jt) {
		struct scan_loop loop = { .ts = ts, .jt = jt };

		jt->owner = key;
		for (int k = 0; k < GATE_JOIN_SLOTS; k++)
			jt->joins[k].target = 0;
		bpf_loop((sc->len + 511) / 512, clear_chunk, &loop, 0);
		bpf_loop((sc->len + GATE_CHUNK - 1) / GATE_CHUNK, mark_chunk, &loop, 0);
		/* Before any call is scanned, a function starts with a scalar, or what callbacks get. */
		__builtin_memset(sc->args, GATE_T_SCALAR | (sc->flags & SCAN_FUNC_ADDR ? sc->callbacks : 0),
				 sizeof(sc->args));
		bpf_loop((sc->len + GATE_CHUNK - 1) / GATE_CHUNK, scan_chunk, &loop, 0);
		/* Another load on this CPU took the jump targets meanwhile: the tags may be wrong. */
		contended = *(volatile __u64 *)&jt->owner != key;
	}
	if (f->attach_type == AT_MODIFY_RETURN)
		note(sc, BPFGATE_CLASS_OVERRIDE_RETURN, GATE_EV_INSN | 0);
	if (sc->scanned < f->insn_cnt) {
		/* Unread instructions could call anything. */
		v.flags |= GATE_F_TRUNCATED;
		note(sc, BPFGATE_CLASS_UNKNOWN, GATE_EV_INSN | (sc->scanned & GATE_EV_VALUE_MASK));
	}
	if (contended) {
		/* Count the three by their preconditions alone, as if every access were through an unknown register. */
		sc->flags |= SCAN_CONTENDED;
		sc->unknown_load = 1;
		sc->unknown_store = 1;
	}
	maybe_class(sc, &maybe, BPFGATE_CLASS_KERNEL_READ, sc->btf_load,
		    btf_typed(f->prog_type) || (sc->flags & SCAN_BTF_SOURCE) ? sc->unknown_load : 0);
	maybe_class(sc, &maybe, BPFGATE_CLASS_MAP_WRITE, sc->map_store, sc->flags & SCAN_MAP_REF ? sc->unknown_store : 0);
	maybe_class(sc, &maybe, BPFGATE_CLASS_PACKET_WRITE, sc->packet_store,
		    packet_type(f->prog_type) ? sc->unknown_store : 0);
	f->classes = sc->classes | maybe;
	f->maybe_classes = maybe;

	/* The attach target, for programs that name it by BTF id at load time. */
	struct btf *btf = BPF_CORE_READ(aux, attach_btf);
	__u32 btf_id = BPF_CORE_READ(aux, attach_btf_id);

	if (btf && btf_id && btf_type_name(btf, btf_id, f->prog_type, f->attach_type, f->target) == 0) {
		f->has_target = true;
		v.flags |= GATE_F_TARGET;
		f->gate_hook = gate_hook_target(f->prog_type, f->attach_type, f->target);
	}

	gate_evaluate(f, &f->subject, &v, NULL, &no_map);
	if (kernel)
		v.flags |= GATE_F_KERNEL;

	struct gate_event *e = new_event(GATE_OP_PROG_LOAD, &f->subject, &v);

	if (e) {
		event_program(e, f, aux);
		e->attach_btf_id = btf_id;
		e->scanned = sc->scanned;
		e->scan_flags = sc->flags & SCAN_CONTENDED ? GATE_SCAN_CONTENDED : 0;
#pragma unroll
		for (int k = 0; k < GATE_CLASS_SLOTS; k++)
			e->evidence[k] = sc->evidence[k];
		bpf_ringbuf_submit(e, 0);
	}

	/*
	 * Allowed so far: the map rules decide at lsm/bpf_prog, once the verifier has bound the maps. A denied
	 * load's entry goes only now, after the event read its facts and scan from it.
	 */
	if (v.decision == GATE_DENY) {
		bpf_map_delete_elem(&pending_loads, &key);
	} else {
		ts->load_decision = v.decision;
		ts->load_generation = v.generation;
	}
	return v.decision == GATE_DENY ? -EPERM : 0;
}

/*
 * Two variants of one hook: the 6.16 kernel added `bool kernel` to bpf_prog_load (and to bpf and
 * bpf_map_create), which moves the previous LSM's return value one slot along the context. The
 * loader reads the hook's prototype from the running kernel's BTF and loads only the matching ones.
 */
SEC("lsm/bpf_prog_load")
int BPF_PROG(gate_prog_load_v3, struct bpf_prog *prog, union bpf_attr *attr, struct bpf_token *token, int ret)
{
	if (ret)
		return ret; /* an earlier LSM program already refused it */
	return gate_prog_load(prog, attr, false);
}

SEC("lsm/bpf_prog_load")
int BPF_PROG(gate_prog_load_v4, struct bpf_prog *prog, union bpf_attr *attr, struct bpf_token *token, bool kernel,
	     int ret)
{
	if (ret)
		return ret;
	return gate_prog_load(prog, attr, kernel);
}

/* Who owns a map, as the map rules see it: own (same subject as `s`) and pinned. */
static __always_inline void map_facts(struct bpf_map *map, const struct gate_subject *s, __u8 *own, __u8 *pinned)
{
	__u64 key = (__u64)map;
	struct gate_map_owner *o = bpf_map_lookup_elem(&map_owners, &key);

	*own = o && (o->flags & GATE_OWNER_KNOWN) && same_subject(&o->subject, s);
	*pinned = o && (o->flags & GATE_OWNER_PINNED);
}

/* Whether a map's value has kptr fields (map->record, which the kernel built from the value's BTF). */
static __always_inline bool map_holds_kptr(struct bpf_map *map)
{
	__u32 kptrs = 0;

	if (!bpf_core_field_exists(struct bpf_map, record))
		return true;
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_UNREF))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_UNREF);
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_REF))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_REF);
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_PERCPU))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_PERCPU);
	return BPF_CORE_READ(map, record, field_mask) & kptrs;
}

struct gather_ctx {
	struct bpf_map **used;
	struct used_maps *um;
	const struct gate_subject *subject;
};

static long gather_map(__u64 i, void *data)
{
	struct gather_ctx *g = data;
	struct bpf_map *map = NULL;
	struct used_maps *um = g->um;

	if (bpf_probe_read_kernel(&map, sizeof(map), &g->used[i]) || !map)
		return 0;
	enum bpf_map_type type = BPF_CORE_READ(map, map_type);

	if (type == BPF_MAP_TYPE_ARRAY_OF_MAPS || type == BPF_MAP_TYPE_HASH_OF_MAPS) {
		um->unattributed = true; /* programs write the inner maps, which used_maps does not list */
		um->kptr = true;         /* and their values may hold kptrs */
		return 0;
	}
	um->kptr |= map_holds_kptr(map);
	if (BPF_CORE_READ(map, map_flags) & BPF_F_RDONLY_PROG)
		return 0; /* programs cannot write it (.rodata, .kconfig) */
	__u32 n = um->count;

	if (n >= GATE_MAX_USED_MAPS)
		return 1;
	struct used_map *m = &um->maps[n];

	m->id = BPF_CORE_READ(map, id);
	BPF_CORE_READ_STR_INTO(&m->name, map, name);
	map_facts(map, g->subject, &m->own, &m->pinned);
	um->count = n + 1;
	return 0;
}

/*
 * BPF_PROG_GET_FD_BY_ID or a pin opens a program the gate let load: another subject gets the fd only
 * if its own rule would let it load that program (map rules aside: taking an fd writes no map).
 * Otherwise a program it may not load would still be in its hands, to attach, to run, or to reach by
 * a tail call from a prog array of its own. Programs loaded before the gate attached have no record.
 */
static __always_inline int gate_prog_open(struct bpf_prog_aux *aux, __u32 id)
{
	__u64 key = (__u64)aux;
	struct facts *loaded = bpf_map_lookup_elem(&loaded_progs, &key);
	struct gate_subject s = {};
	struct verdict v = {};
	__u32 bad = 0;

	if (!loaded)
		return 0;
	current_subject(&s);
	if (same_subject(&s, &loaded->subject))
		return 0;
	gate_evaluate(loaded, &s, &v, NULL, &bad);
	struct gate_event *e = new_event(GATE_OP_PROG_OPEN, &s, &v);

	if (e) {
		event_program(e, loaded, aux);
		e->object_id = id;
		bpf_ringbuf_submit(e, 0);
	}
	return v.decision == GATE_DENY ? -EPERM : 0;
}

/*
 * Whether the verifier bound other module BTFs than the scan read from fd_array: every index the scan
 * resolved must be in aux->kfunc_btf_tab (where the verifier keeps them for the program's life, sorted by
 * index) with the same BTF object. A kernel without that table in its BTF cannot be checked: changed.
 */
static __noinline bool kfunc_btfs_changed(struct pending_load *ts, struct bpf_prog_aux *aux)
{
	if (!ts)
		return true;
	__u32 n = ts->scan.kfunc_btf_cnt, matched = 0;

	if (!n)
		return false;
	if (!bpf_core_type_exists(struct bpf_kfunc_btf_tab))
		return true;
	struct bpf_kfunc_btf_tab *tab = BPF_CORE_READ(aux, kfunc_btf_tab);
	if (!tab)
		return true;
	__u32 nr = BPF_CORE_READ(tab, nr_descs);
	__u64 first = (__u64)tab + bpf_core_field_offset(struct bpf_kfunc_btf_tab, descs);
	__u64 stride = bpf_core_type_size(struct bpf_kfunc_btf);

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < 256; i++) {
		if (i >= nr)
			break;
		struct bpf_kfunc_btf *d = (struct bpf_kfunc_btf *)(first + i * stride);
		__u32 off = BPF_CORE_READ(d, offset);
		__u32 id = BPF_CORE_READ(d, btf, id);

#pragma unroll
		for (__u32 k = 0; k < GATE_KFUNC_BTFS; k++)
			if (k < n && ts->scan.kfunc_btfs[k].off == off && ts->scan.kfunc_btfs[k].obj_id == id)
				matched |= 1U << k;
	}
	return matched != (1U << n) - 1;
}

/*
 * lsm/bpf_prog: an fd to a program is about to be made. Right after a load (the task's pending
 * record names this program) it is the load's final decision, with the maps the verifier bound.
 * Otherwise (BPF_PROG_GET_FD_BY_ID, a pin): the gate's own programs are refused to others, and
 * another subject's program is decided by gate_prog_open.
 */
SEC("lsm/bpf_prog")
int BPF_PROG(gate_prog_fd, struct bpf_prog *prog, int ret)
{
	struct bpf_prog_aux *aux = BPF_CORE_READ(prog, aux);
	__u64 key = (__u64)aux;
	struct pending_load *ts;
	struct verdict v = {};

	if (ret)
		return ret;
	ts = bpf_map_lookup_elem(&pending_loads, &key);
	if (!ts) {
		__u32 id = BPF_CORE_READ(aux, id);

		if (is_daemon())
			return 0;
		if (!gate_object(GATE_KIND_PROG, id))
			return gate_prog_open(aux, id);
		struct gate_subject s = {};

		current_subject(&s);
		refuse_gate_object(&v);
		struct gate_event *e = new_event(GATE_OP_PROG_OPEN, &s, &v);

		if (e) {
			e->object_id = id;
			e->prog_type = BPF_CORE_READ(prog, type);
			if (bpf_probe_read_kernel(e->name, sizeof(e->name), &aux->name))
				e->name[0] = 0;
			bpf_ringbuf_submit(e, 0);
		}
		return -EPERM;
	}
	__u32 bad = 0;
	struct used_maps *um = &ts->used;

	um->count = 0;
	um->unattributed = false;
	um->kptr = false;
	struct gather_ctx g = {
		.used = BPF_CORE_READ(aux, used_maps),
		.um = um,
		.subject = &ts->facts.subject,
	};
	__u32 cnt = BPF_CORE_READ(aux, used_map_cnt);

	if (g.used)
		bpf_loop(cnt < GATE_MAX_USED_MAPS ? cnt : GATE_MAX_USED_MAPS, gather_map, &g, 0);
	if (cnt > GATE_MAX_USED_MAPS) {
		/* The kernel allows 64: cannot happen. */
		um->unattributed = true;
		um->kptr = true;
	}
	bool btfs_changed = kfunc_btfs_changed(ts, aux);
	/*
	 * A load through an unknown register reads kernel memory where a used map may hold kptrs: known only now
	 * that the verifier bound the maps (the scan counted it already in a BTF-typed program or with a BTF source).
	 */
	bool kptr_read = um->kptr && ts->scan.unknown_load && !(ts->facts.classes & BPFGATE_CLASS_KERNEL_READ);

	if (kptr_read) {
		ts->facts.classes |= BPFGATE_CLASS_KERNEL_READ;
		ts->facts.maybe_classes |= BPFGATE_CLASS_KERNEL_READ;
	}

	if (btfs_changed) {
		/* The scan judged other kfuncs than the program calls: unknown, and the three it could miss. */
		__u32 three = BPFGATE_CLASS_KERNEL_READ | BPFGATE_CLASS_MAP_WRITE | BPFGATE_CLASS_PACKET_WRITE;

		ts->facts.classes |= BPFGATE_CLASS_UNKNOWN | three;
		ts->facts.maybe_classes |= three;
	}
	gate_evaluate(&ts->facts, &ts->facts.subject, &v, um, &bad);
	/*
	 * Fail closed under an enforced policy: a program without a record could be handed to any
	 * subject (gate_prog_open).
	 */
	if (v.decision != GATE_DENY && bpf_map_update_elem(&loaded_progs, &key, &ts->facts, BPF_ANY) &&
	    !(v.flags & (GATE_F_NO_POLICY | GATE_F_AUDIT_MODE))) {
		v.decision = GATE_DENY;
		v.rule = GATE_RULE_DEFAULT;
		v.reasons = 0;
	}

	/*
	 * The whole decision is taken again here, under the policy in force now: if a reload happened
	 * while the verifier ran, this one generation decides the load. An event when that generation
	 * differs, the outcome changed, or a map broke a rule; the load event stands otherwise.
	 */
	if ((v.reasons & R_MAP) || v.decision != ts->load_decision || v.generation != ts->load_generation ||
	    btfs_changed || kptr_read) {
		struct gate_event *e = new_event(GATE_OP_PROG_MAPS, &ts->facts.subject, &v);

		if (e) {
			event_program(e, &ts->facts, aux);
			e->object_id = BPF_CORE_READ(aux, id);
			e->scan_flags = (btfs_changed ? GATE_SCAN_KFUNC_BTF_CHANGED : 0) | (kptr_read ? GATE_SCAN_KPTR_READ : 0);
			if (bad > 0 && bad <= GATE_MAX_USED_MAPS)
				__builtin_memcpy(e->map_name, um->maps[(bad - 1) & (GATE_MAX_USED_MAPS - 1)].name,
						 sizeof(e->map_name));
			bpf_ringbuf_submit(e, 0);
		}
	}
	bpf_map_delete_elem(&pending_loads, &key);
	return v.decision == GATE_DENY ? -EPERM : 0;
}

/*
 * A program goes away: its record of a load (gate_prog_open) with it, and the pending record of a
 * load the verifier refused, which never reaches lsm/bpf_prog.
 */
SEC("lsm/bpf_prog_free")
int BPF_PROG(gate_prog_free, struct bpf_prog *prog)
{
	__u64 key = (__u64)BPF_CORE_READ(prog, aux);

	bpf_map_delete_elem(&pending_loads, &key);
	bpf_map_delete_elem(&loaded_progs, &key);
	return 0;
}

/* The creator of a map becomes its owner. */
static __always_inline int gate_map_create(struct bpf_map *map)
{
	struct gate_map_owner o = { .flags = GATE_OWNER_KNOWN };
	struct verdict v = { .rule = GATE_RULE_DEFAULT };
	__u64 key = (__u64)map;

	current_subject(&o.subject);
	/* Fail closed: an unrecorded map would be nobody's, and writable by nobody's rules. */
	if (bpf_map_update_elem(&map_owners, &key, &o, BPF_ANY)) {
		v.decision = GATE_DENY;
		count_drop();
		return -EPERM;
	}
	v.decision = GATE_ALLOW;
	struct gate_event *e = new_event(GATE_OP_MAP_CREATE, &o.subject, &v);

	if (e) {
		BPF_CORE_READ_STR_INTO(&e->name, map, name);
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("lsm/bpf_map_create")
int BPF_PROG(gate_map_create_v3, struct bpf_map *map, union bpf_attr *attr, struct bpf_token *token, int ret)
{
	if (ret)
		return ret;
	return gate_map_create(map);
}

SEC("lsm/bpf_map_create")
int BPF_PROG(gate_map_create_v4, struct bpf_map *map, union bpf_attr *attr, struct bpf_token *token, bool kernel,
	     int ret)
{
	if (ret)
		return ret;
	return gate_map_create(map);
}

SEC("lsm/bpf_map_free")
int BPF_PROG(gate_map_free, struct bpf_map *map)
{
	__u64 key = (__u64)map;

	bpf_map_delete_elem(&map_owners, &key);
	return 0;
}

/*
 * lsm/bpf_map: an fd to a map is about to be made (creation, BPF_MAP_GET_FD_BY_ID, a pin). A
 * writable fd to another subject's map needs a rule that lets the subject write it; the gate's own
 * maps are writable by its daemon only.
 */
SEC("lsm/bpf_map")
int BPF_PROG(gate_map_fd, struct bpf_map *map, unsigned int fmode, int ret)
{
	struct gate_subject s = {};
	struct verdict v = { .rule = GATE_RULE_DEFAULT };
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 *cmd = bpf_map_lookup_elem(&thread_cmds, &tid);
	__u32 id;
	__u64 key = (__u64)map;
	struct used_map m = {};

	if (ret)
		return ret;
	id = BPF_CORE_READ(map, id);
	if (cmd && *cmd == CMD_OBJ_GET) {
		/* Reached through a pin: shared, whoever created it. */
		struct gate_map_owner *o = bpf_map_lookup_elem(&map_owners, &key);

		if (o) {
			o->flags |= GATE_OWNER_PINNED; /* the only bit ever set after creation */
		} else {
			struct gate_map_owner fresh = { .flags = GATE_OWNER_PINNED };

			bpf_map_update_elem(&map_owners, &key, &fresh, BPF_NOEXIST);
		}
	}
	if (!(fmode & FMODE_WRITE))
		return 0;
	current_subject(&s);
	if (gate_object(GATE_KIND_MAP, id)) {
		if (is_daemon())
			return 0;
		refuse_gate_object(&v);
	} else {
		map_facts(map, &s, &m.own, &m.pinned);
		if (m.own && !m.pinned)
			return 0; /* the common case: a loader's own maps */
		BPF_CORE_READ_STR_INTO(&m.name, map, name);

		/* The subject's rule decides as for a program that writes this map. */
		struct rule_match rm = {};

		if (rule_for(&s, &v, &rm, false)) {
			bool ok = map_write_ok(rm.r, rm.slot, &m);

			finish(&v, rm.r->action == A_AUDIT ? GATE_AUDIT : ok ? GATE_ALLOW : GATE_DENY, rm.id,
			       ok ? 0 : R_MAP, v.flags & GATE_F_AUDIT_MODE);
		}
		if (m.pinned)
			v.flags |= GATE_F_PINNED;
	}
	struct gate_event *e = new_event(GATE_OP_MAP_OPEN, &s, &v);

	if (e) {
		e->object_id = id;
		e->fmode = fmode;
		BPF_CORE_READ_STR_INTO(&e->name, map, name);
		bpf_ringbuf_submit(e, 0);
	}
	return v.decision == GATE_DENY ? -EPERM : 0;
}

/* lsm/bpf: runs first in every bpf() call. Notes the command for the hooks after it. */
static __always_inline int gate_bpf_cmd(int cmd, union bpf_attr *attr)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 c = cmd;

	/*
	 * Only BPF_OBJ_GET is noted, and dropped at the thread's next call: the common call (a map lookup
	 * from user space) costs one failed lookup, not an LRU update.
	 */
	if (cmd == CMD_OBJ_GET)
		bpf_map_update_elem(&thread_cmds, &tid, &c, BPF_ANY);
	else if (bpf_map_lookup_elem(&thread_cmds, &tid))
		bpf_map_delete_elem(&thread_cmds, &tid);
	if (cmd != CMD_LINK_GET_FD_BY_ID || is_daemon())
		return 0;
	__u32 link_id = 0;

	/* attr is the kernel's copy; link_id is its first word for this command. */
	if (bpf_probe_read_kernel(&link_id, sizeof(link_id), attr) || !gate_object(GATE_KIND_LINK, link_id))
		return 0;
	struct gate_subject s = {};
	struct verdict v = {};

	current_subject(&s);
	refuse_gate_object(&v);
	struct gate_event *e = new_event(GATE_OP_LINK_OPEN, &s, &v);

	if (e) {
		e->object_id = link_id;
		bpf_ringbuf_submit(e, 0);
	}
	return -EPERM;
}

SEC("lsm/bpf")
int BPF_PROG(gate_bpf_v3, int cmd, union bpf_attr *attr, unsigned int size, int ret)
{
	if (ret)
		return ret;
	return gate_bpf_cmd(cmd, attr);
}

SEC("lsm/bpf")
int BPF_PROG(gate_bpf_v4, int cmd, union bpf_attr *attr, unsigned int size, bool kernel, int ret)
{
	if (ret)
		return ret;
	return gate_bpf_cmd(cmd, attr);
}
