/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The BPF side's own records: the scan's state, a program's facts and verdict, the maps a program uses,
 * a load in flight. Not shared with user space (what is, the loader's records and the events, is gate_abi.h,
 * generated from bpfgate::gate_abi).
 */
#ifndef BPFGATE_TYPES_BPF_H
#define BPFGATE_TYPES_BPF_H

/* The kernel's limit on BPF_PROG_LOAD instructions (BPF_COMPLEXITY_LIMIT_INSNS). */
#define GATE_MAX_INSNS (1U << 20)

/* Instructions copied per bpf_loop iteration, into the load's pending_loads entry. */
#define GATE_CHUNK 64

/* Scan flags. */
#define SCAN_BTF_SOURCE (1U << 0) /* a kfunc, a helper returning a BTF pointer, an ld_imm64 of a BTF id */
#define SCAN_MAP_REF (1U << 1) /* a map is used: an ld_imm64 of a map or map value, an arena cast */
#define SCAN_BLOCK_ENDS (1U << 2) /* the last instruction ended a block (exit, ja, gotox) */
#define SCAN_GOTOX (1U << 3) /* an indirect jump: any instruction may start a block */
#define SCAN_CONTENDED (1U << 4) /* another load took this CPU's jump_targets during the scan */
#define SCAN_FUNC_ADDR (1U << 5) /* an ld_imm64 of a function: the program runs callbacks */
#define SCAN_NOT_EXECUTABLE (1U << 6) /* a helper call the kernel cannot execute (bpfgate::target) */
#define SCAN_FD_ARRAY_UNREAD (1U << 9) /* a module kfunc call's fd_array slot could not be read */
/*
 * The tag pass runs without the marking pass (scan_program): forward targets are marked as their jumps are
 * met. It needs the marking pass after all (SCAN_RESCAN) at a backward jump or call, an indirect jump, or
 * an ld_imm64 of a function.
 */
#define SCAN_ONE_PASS (1U << 7)
#define SCAN_RESCAN (1U << 8)

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
	__u8 regs[16] __attribute__((aligned(8))); /* joined as two words */
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
	__u8 regs[16]
		__attribute__((aligned(8))); /* r0-r10; r11-r15 only keep a bad register field in bounds */
	/* What r1-r5 may hold where a function starts (kernel_view's Scan::args), and, from the first
	 * pass, what the helpers and kfuncs the program calls hand callbacks. */
	__u8 args[5];
	__u8 callbacks;
	__u8 ctx_btf; /* btf_typed(prog_type) */
	__u8 reserved;
	__u32 len;
	__u32 scanned;
	__u32 prog_type;
	__u32 classes;
	__u32 flags;
	/* The whole id of the helper call that proved `unknown` (its evidence word keeps 30 bits). */
	__u32 unknown_helper;
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
	__u32 ctx_fields; /* packet_ctx_fields(prog_type) */
	__u32 reserved2;
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
	__u64 words[GATE_MAX_INSNS / 64]; /* jump targets */
	__u64 resets[GATE_MAX_INSNS / 64]; /* targets where the tags reset */
};

/* Who loads a program or creates a map: executable, cgroup, real uid. */
struct gate_subject {
	__u64 exe_dev;
	__u64 exe_ino;
	__u64 cgroup_id;
	__u32 uid;
	__u32 reserved;
};

/* A task's cgroup ancestors the subject match looks at. */
#define GATE_MAX_CGROUP_DEPTH 32

/*
 * A loader's cgroup and its ancestors, from the root (level 0) down, 0 past the deepest: recorded with its
 * subject, because a load's final decision can run in another task (see pending_load).
 */
struct cgroup_path {
	__u64 ids[GATE_MAX_CGROUP_DEPTH];
};

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
	__u32 bad_map; /* gate_evaluate: the index + 1 of the first used map a rule refused, or 0 */
};

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
	bool kptr; /* a map may hold kptrs: kptr fields, or a map-in-map (bpfgate::MapDef::may_hold_kptr) */
	struct used_map maps[GATE_MAX_USED_MAPS];
};

/*
 * A load in flight, from lsm/bpf_prog_load (6.9+) or lsm/bpf_prog_alloc_security (6.1) to lsm/bpf_prog (or
 * lsm/bpf_prog_free when the verifier refuses it; a denied one stays until the program is freed), keyed by its bpf_prog_aux address (aux survives the verifier's reallocations of the
 * program): the facts its final decision needs once the verifier has bound its maps. A map entry,
 * not stack or per-CPU scratch: it is too large for the stack, and LSM programs can be preempted
 * (another task's hook on the same CPU would overwrite a per-CPU buffer mid-decision). Task storage
 * would be natural, but 7.x kernels refuse to create it from these hooks.
 */
/*
 * A pending_load's state word: a sequence number (gate_load_seq, unique per record) shifted left by 2, and
 * the state in the low bits. lsm/bpf_prog stores its verdict with one compare-and-swap on the whole word, so
 * of concurrent first calls for one program (the loader's fd and another thread's BPF_PROG_GET_FD_BY_ID)
 * exactly one decides, and a call that read a record later freed and reused for another load cannot.
 */
#define GATE_LOAD_PENDING 0U /* scanned; the map rules have not decided yet */
#define GATE_LOAD_ALLOWED 1U /* decided: allowed; the facts are in loaded_progs */
#define GATE_LOAD_DENIED 2U /* decided, or denied by the scan at fentry/bpf_check: every fd is refused */
#define GATE_LOAD_UNSCANNED 3U /* 6.1: allocated (lsm/bpf_prog_alloc_security), no scan completed yet */
#define GATE_LOAD_STATE_MASK 3ULL

struct pending_load {
	__u32 load_decision;
	__u32 reserved;
	__u64 load_generation;
	__u64 state; /* sequence << 2 | GATE_LOAD_* */
	struct facts facts;
	/*
	 * The loader's cgroup path, taken with facts.subject: the final decision (lsm/bpf_prog) matches rules by
	 * it, not by the cgroup of whichever task makes the program's first fd.
	 */
	struct cgroup_path cgroups;
	/* The loading task, for the events of a decision made in another task's call. */
	__u64 pid_tgid;
	char comm[GATE_COMM_LEN];
	struct used_maps used;
	/* The scan's state and the chunk of instructions it reads: here, as the stack has no room for them. */
	struct scan_ctx scan;
	struct raw_insn scan_buf[GATE_CHUNK];
};

#endif /* BPFGATE_TYPES_BPF_H */
