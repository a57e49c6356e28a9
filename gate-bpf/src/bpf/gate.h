/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Records shared by the gate's BPF program (gate.bpf.c) and its loader (src/gate.rs, which mirrors
 * every struct here as #[repr(C)] and checks the sizes). Fixed-width fields with explicit padding
 * only, so both compilers lay them out the same way.
 *
 * The policy records are the little-endian layout of bpfgate::policy::compiled (docs/policy.md,
 * "The compiled form"); the loader writes them with that module's to_le_bytes.
 */
#ifndef BPFGATE_GATE_H
#define BPFGATE_GATE_H

/* Two policy slots: the daemon fills the one not in use, then flips gate_active_slot. */
#define GATE_SLOTS 2
#define GATE_MAX_RULES 64
#define GATE_MAX_TARGETS 1024
#define GATE_MAX_MAP_NAMES 256
/* Distinct exe / cgroup / uid keys per slot: at most one per rule, and hard links add a few. */
#define GATE_MAX_SUBJECT_KEYS 256
#define GATE_MAX_KFUNCS 4096
#define GATE_TARGET_PATTERN_LEN 64
/* Room for a target name one byte longer than any pattern, so exact matches cannot be fooled by truncation. */
#define GATE_TARGET_LEN 80
#define GATE_NAME_LEN 16
#define GATE_COMM_LEN 16
/* The kernel's limit on BPF_PROG_LOAD instructions (BPF_COMPLEXITY_LIMIT_INSNS). */
#define GATE_MAX_INSNS (1U << 20)
#define GATE_CLASS_SLOTS 16
#define GATE_MAX_CGROUP_DEPTH 32

#define GATE_POLICY_MAGIC 0x47465042U /* "BPFG" little-endian */
#define GATE_POLICY_FORMAT 1

/* gate_event.op */
#define GATE_OP_PROG_LOAD 1  /* lsm/bpf_prog_load: classes, type, target */
#define GATE_OP_PROG_MAPS 2  /* lsm/bpf_prog after verification: the maps the program uses */
#define GATE_OP_MAP_CREATE 3 /* lsm/bpf_map_create: the creator becomes the map's owner */
#define GATE_OP_MAP_OPEN 4   /* lsm/bpf_map: a writable fd to another subject's (or the gate's) map */
#define GATE_OP_PROG_OPEN 5  /* lsm/bpf_prog: an fd by id or pin to the gate's or another subject's program */
#define GATE_OP_LINK_OPEN 6  /* lsm/bpf: BPF_LINK_GET_FD_BY_ID of one of the gate's links */

/* gate_event.verdict: bpfgate::policy::Decision::number */
#define GATE_ALLOW 0
#define GATE_DENY 1
#define GATE_AUDIT 2

/* gate_event.flags */
#define GATE_F_KERNEL (1U << 0)      /* bpf_prog_load from the kernel (6.16+ hook argument) */
#define GATE_F_NO_POLICY (1U << 1)   /* no valid policy in the active slot: allowed */
#define GATE_F_AUDIT_MODE (1U << 2)  /* the policy is in audit mode */
#define GATE_F_TARGET (1U << 3)      /* target holds the attach target's BTF name */
#define GATE_F_ENFORCED (1U << 4)    /* the load was refused with -EPERM */
#define GATE_F_TRUNCATED (1U << 5)   /* the scan stopped early (unreadable instructions): classes incomplete */
#define GATE_F_GATE_OBJECT (1U << 6) /* the object is one of the gate's own (self-protection) */
#define GATE_F_PINNED (1U << 7)      /* map events: the map is pinned */

/* gate_event.scan_flags */
#define GATE_SCAN_CONTENDED (1U << 0) /* preempted by another load's scan: kernel_read, map_write and
				       * packet_write counted by their preconditions only */
#define GATE_SCAN_KFUNC_BTF_CHANGED (1U << 1) /* the verifier bound other module BTFs than the scan read
					       * from fd_array: unknown and the three counted */
#define GATE_SCAN_KPTR_READ (1U << 2) /* kernel_read counted at lsm/bpf_prog: a load through an unknown
				       * register, and a used map may hold kptrs */

/* Reason bit of self-protection denials, after bpfgate::policy::reason_bits. */
#define GATE_R_GATE_OBJECT (1U << 8)

/* gate_event.rule when the policy default decided */
#define GATE_RULE_DEFAULT 0xffffffffU

/*
 * gate_event.evidence[class bit]: what first proved the class, kind in the top two bits.
 * HELPER: helper id; KFUNC: with GATE_EV_CATALOGUED its index in the catalogue, else the call's BTF id
 * (of vmlinux or a module); INSN: instruction index (conservative classes, and override_return of
 * BPF_MODIFY_RETURN programs at 0).
 */
#define GATE_EV_NONE 0U
#define GATE_EV_HELPER (1U << 30)
#define GATE_EV_KFUNC (2U << 30)
#define GATE_EV_INSN (3U << 30)
#define GATE_EV_KIND_MASK (3U << 30)
#define GATE_EV_VALUE_MASK (~GATE_EV_KIND_MASK)
#define GATE_EV_CATALOGUED (1U << 29)

/* One decision, on the events ring buffer (296 bytes). */
struct gate_event {
	__u64 ts_ns;            /* bpf_ktime_get_boot_ns */
	__u64 generation;       /* policy generation that decided (0: none) */
	__u64 exe_dev;          /* kernel dev_t encoding (MAJOR << 20 | MINOR) */
	__u64 exe_ino;
	__u64 cgroup_id;
	__u32 pid;              /* thread id */
	__u32 tgid;
	__u32 uid;              /* real uid */
	__u32 op;               /* GATE_OP_* */
	__u32 prog_type;
	__u32 attach_type;      /* expected_attach_type as submitted */
	__u32 attach_btf_id;
	__u32 insn_cnt;
	__u32 classes;          /* proved by calls: helper, kfunc, tail call, fmod_ret */
	__u32 maybe_classes;    /* conservative: kernel_read, map_write, packet_write (see gate.bpf.c) */
	__u32 reasons;          /* bpfgate::policy::reason_bits */
	__u32 rule;             /* rule id or GATE_RULE_DEFAULT */
	__u8 verdict;           /* GATE_ALLOW, GATE_DENY, GATE_AUDIT */
	__u8 flags;             /* GATE_F_* */
	__u16 scan_flags;       /* GATE_SCAN_* */
	__u32 scanned;          /* instructions scanned; less than insn_cnt only with GATE_F_TRUNCATED */
	__u32 evidence[GATE_CLASS_SLOTS];
	__u32 object_id;        /* map, program or link id the operation is about (0: none yet) */
	__u32 fmode;            /* GATE_OP_MAP_OPEN: the fd's mode (FMODE_READ 1, FMODE_WRITE 2) */
	char comm[GATE_COMM_LEN];
	char name[GATE_NAME_LEN]; /* program name, or map name for map operations */
	char map_name[GATE_NAME_LEN]; /* GATE_OP_PROG_MAPS: the first map that broke the rule */
	char target[GATE_TARGET_LEN];
};

/* Policy records (bpfgate::policy::compiled), 48 / 40 / 68 bytes. */
struct gate_policy_header {
	__u32 magic;
	__u32 format_version;
	__u64 generation;
	__u8 mode;              /* 0 enforce, 1 audit */
	__u8 default_action;    /* 0 allow, 1 deny, 2 audit */
	__u16 rule_count;
	__u32 reserved;
	__u64 exe_any;
	__u64 cgroup_any;
	__u64 uid_any;
};

struct gate_rule {
	__u8 action;
	__u8 map_write;         /* 0 any, 1 own, 2 none */
	__u8 flags;             /* GATE_RULE_* */
	__u8 reserved;
	__u32 max_insns;
	__u32 allowed_classes;
	__u32 denied_classes;
	__u64 prog_types;
	__u64 attach_types;
	__u16 target_first;
	__u16 target_count;
	__u16 map_first;
	__u16 map_count;
};

#define GATE_RULE_PROG_TYPES (1U << 0)
#define GATE_RULE_ATTACH_TYPES (1U << 1)
#define GATE_RULE_ATTACH_TARGETS (1U << 2)
#define GATE_RULE_PINNED_OK (1U << 3)

#define GATE_PATTERN_EXACT 0
#define GATE_PATTERN_PREFIX 1

struct gate_pattern {
	__u8 kind;
	__u8 len;
	__u8 reserved[2];
	char text[GATE_TARGET_PATTERN_LEN];
};

/* maps.named patterns (20 bytes): at most 15 bytes, all the kernel keeps of a map name. */
struct gate_map_pattern {
	__u8 kind;
	__u8 len;
	__u8 reserved[2];
	char text[GATE_NAME_LEN];
};

/* Map keys; slot is the policy slot (0 or 1). */
struct gate_exe_key {
	__u32 slot;
	__u32 reserved;
	__u64 dev;
	__u64 ino;
};

struct gate_cgroup_key {
	__u64 slot;
	__u64 id;
};

struct gate_uid_key {
	__u32 slot;
	__u32 uid;
};

/* kfunc_classes values: bpfgate::kernel_view::kfunc_value (GATE_KFUNC_*_SHIFT in gate_scan.h). */
/*
 * A kfunc by where its BTF lives: btf_obj 0 for vmlinux (a call with off 0), else the id of the module's BTF
 * object (the kernel's struct btf id, what BPF_BTF_GET_NEXT_ID lists); btf_id is the call's imm.
 */
struct gate_kfunc_key {
	__u32 btf_obj;
	__u32 btf_id;
};

/*
 * Map ownership, keyed by the kernel's struct bpf_map address: recorded at lsm/bpf_map_create,
 * dropped at lsm/bpf_map_free (so an address is never reused with a stale owner). Maps created
 * before the gate started have no record: they are nobody's own.
 */
#define GATE_MAX_MAP_OWNERS (1U << 16)
#define GATE_OWNER_KNOWN (1U << 0)  /* created while the gate was attached; subject fields valid */
#define GATE_OWNER_PINNED (1U << 1) /* opened through a pin (BPF_OBJ_GET) at least once */

struct gate_subject {
	__u64 exe_dev;
	__u64 exe_ino;
	__u64 cgroup_id;
	__u32 uid;
	__u32 reserved;
};

struct gate_map_owner {
	struct gate_subject subject;
	__u32 flags;            /* GATE_OWNER_* */
	__u32 reserved;
};

/* The gate's own objects (self-protection), filled by its daemon: kind and id. */
#define GATE_KIND_MAP 1
#define GATE_KIND_PROG 2
#define GATE_KIND_LINK 3
#define GATE_MAX_PROTECTED 64

struct gate_object_key {
	__u32 kind;
	__u32 id;
};

#endif /* BPFGATE_GATE_H */
