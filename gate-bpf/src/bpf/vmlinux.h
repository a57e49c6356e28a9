/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Hand-written subset of the kernel types the gate's BPF programs use.
 *
 * A generated vmlinux.h is 2.8 MB and ties the source to one kernel build. CO-RE only needs
 * the fields we touch, with the right names: preserve_access_index makes clang emit BTF
 * relocations that libbpf resolves against the running kernel's BTF at load time, so field
 * offsets and struct sizes here do not have to match any kernel. Enums used as fields must
 * stay enums (not integers) so their relocations match the kernel's BTF kind.
 */
#ifndef BPFGATE_VMLINUX_H
#define BPFGATE_VMLINUX_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* libbpf's bpf_helper_defs.h names these in helper prototypes. */
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#define BPF_OBJ_NAME_LEN 16U

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum bpf_prog_type {
	BPF_PROG_TYPE_UNSPEC = 0,
	BPF_PROG_TYPE_SOCKET_FILTER = 1,
	BPF_PROG_TYPE_CGROUP_SKB = 8,
	BPF_PROG_TYPE_TRACING = 26,
	BPF_PROG_TYPE_LSM = 29,
};

/* Only the values the gate compares against; the field must stay an enum for CO-RE. */
enum bpf_attach_type {
	BPF_CGROUP_INET_INGRESS = 0,
	BPF_TRACE_RAW_TP = 23,
	BPF_MODIFY_RETURN = 26,
	BPF_TRACE_ITER = 28,
};

/* The bpf() commands the gate notes (lsm/bpf). */
enum bpf_cmd {
	BPF_PROG_LOAD = 5,
	BPF_OBJ_GET = 7,
	BPF_LINK_GET_FD_BY_ID = 30,
};

enum {
	BPF_REG_0 = 0,
	BPF_REG_10 = 10, /* the frame pointer */
};

/*
 * uapi macros (linux/bpf_common.h, linux/bpf.h): macros are not in BTF, so a generated vmlinux.h lacks them
 * too. The uapi's names and values for the instruction fields the scan decodes, defined here rather than
 * taken from the build host's linux/bpf.h, which may predate BPF_MEMSX and load-acquire.
 */
#define BPF_CLASS(code) ((code) & 0x07)
#define BPF_LD 0x00
#define BPF_LDX 0x01
#define BPF_ST 0x02
#define BPF_STX 0x03
#define BPF_ALU 0x04
#define BPF_JMP 0x05
#define BPF_JMP32 0x06
#define BPF_ALU64 0x07

#define BPF_SIZE(code) ((code) & 0x18)
#define BPF_W 0x00
#define BPF_H 0x08
#define BPF_B 0x10
#define BPF_DW 0x18

#define BPF_MODE(code) ((code) & 0xe0)
#define BPF_IMM 0x00
#define BPF_ABS 0x20
#define BPF_IND 0x40
#define BPF_MEM 0x60
#define BPF_MEMSX 0x80
#define BPF_ATOMIC 0xc0

#define BPF_OP(code) ((code) & 0xf0)
#define BPF_ADD 0x00
#define BPF_SUB 0x10
#define BPF_NEG 0x80
#define BPF_MOV 0xb0
#define BPF_END 0xd0
#define BPF_JA 0x00
#define BPF_CALL 0x80
#define BPF_EXIT 0x90

#define BPF_SRC(code) ((code) & 0x08)
#define BPF_K 0x00
#define BPF_X 0x08

/* Atomic operations, in imm. */
#define BPF_FETCH 0x01
#define BPF_XCHG (0xe0 | BPF_FETCH)
#define BPF_CMPXCHG (0xf0 | BPF_FETCH)
#define BPF_LOAD_ACQ 0x100
#define BPF_STORE_REL 0x110

/* ld_imm64 src_reg. */
#define BPF_PSEUDO_MAP_FD 1
#define BPF_PSEUDO_MAP_VALUE 2
#define BPF_PSEUDO_BTF_ID 3
#define BPF_PSEUDO_FUNC 4
#define BPF_PSEUDO_MAP_IDX 5
#define BPF_PSEUDO_MAP_IDX_VALUE 6
/* call src_reg (0: a helper). */
#define BPF_PSEUDO_CALL 1
#define BPF_PSEUDO_KFUNC_CALL 2

/* Map flag: programs cannot write the map (libbpf sets it on .rodata and .kconfig). */
#define BPF_F_RDONLY_PROG (1U << 7)

/* Kernel macros: the verifier's stack frame (linux/bpf.h), a file mode bit (linux/fs.h), errnos. */
#define MAX_BPF_STACK 512
#define FMODE_WRITE 0x2
#define EPERM 1
#define EEXIST 17

/* libbpf's bpf_helpers.h uses these map flags in __uint() declarations. */
#define BPF_F_NO_PREALLOC (1U << 0)
/* bpf_map_update_elem flags */
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

struct bpf_insn {
	__u8 code;
	__u8 dst_reg : 4;
	__u8 src_reg : 4;
	__s16 off;
	__s32 imm;
};

struct btf_type {
	__u32 name_off;
	__u32 info;
} __attribute__((preserve_access_index));

/* Split BTF (modules) numbers its types and strings after its base's: start_id, start_str_off. */
struct btf {
	struct btf_type **types;
	const char *strings;
	struct btf *base_btf;
	__u32 start_id;
	__u32 start_str_off;
	__u32 id; /* the BTF object's id (BPF_BTF_GET_NEXT_ID) */
} __attribute__((preserve_access_index));

/* The module BTFs a program's kfunc calls name, bound by the verifier, by fd_array index (offset). */
struct bpf_kfunc_btf {
	struct btf *btf;
	__u16 offset;
} __attribute__((preserve_access_index));

struct bpf_kfunc_btf_tab {
	struct bpf_kfunc_btf descs[256];
	__u32 nr_descs;
} __attribute__((preserve_access_index));

struct bpf_token;

struct bpf_prog;

/* Which special fields a map value has (kernel/bpf/btf.c); the values come from the kernel's BTF (CO-RE). */
enum btf_field_type {
	BPF_KPTR_UNREF = 4,
	BPF_KPTR_REF = 8,
	BPF_KPTR_PERCPU = 16,
};

struct btf_record {
	__u32 field_mask;
} __attribute__((preserve_access_index));

/* The maps a program uses are bound by the verifier: aux->used_maps after verification. */
struct bpf_map {
	enum bpf_map_type map_type;
	__u32 map_flags;
	__u32 id;
	char name[BPF_OBJ_NAME_LEN];
	struct btf_record *record;
} __attribute__((preserve_access_index));

/* 6.1 (before btf_record, 6.2): the value's kptr fields, NULL when it has none. */
struct bpf_map___v61 {
	void *kptr_off_tab;
} __attribute__((preserve_access_index));

struct bpf_prog_aux {
	__u32 id;
	__u32 used_map_cnt;
	struct bpf_map **used_maps;
	__u32 attach_btf_id;
	struct bpf_prog *prog; /* back-pointer, set at allocation */
	struct btf *attach_btf;
	char name[BPF_OBJ_NAME_LEN];
	struct bpf_token *token;
	struct bpf_kfunc_btf_tab *kfunc_btf_tab;
} __attribute__((preserve_access_index));

/* insnsi sits in an anonymous union of flexible arrays in the kernel; libbpf finds it by name. */
struct bpf_prog {
	enum bpf_prog_type type;
	enum bpf_attach_type expected_attach_type;
	__u32 len;
	struct bpf_prog_aux *aux;
	struct bpf_insn insnsi[];
} __attribute__((preserve_access_index));

/* The loading task's executable: current->mm->exe_file->f_inode->{i_ino, i_sb->s_dev}. */
struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
	void *private_data; /* a BTF fd's struct btf */
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));

/* The loading task's open files, for the BTF fds a load's fd_array names. */
struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

/*
 * The task's real uid and its cgroup on the default hierarchy, where bpf_get_current_uid_gid and
 * bpf_get_current_cgroup_id read them: cred->uid (the kernel's uid is the initial namespace's) and
 * cgroups->dfl_cgrp->kn->id.
 */
typedef struct {
	__u32 val;
} kuid_t;

struct cred {
	kuid_t uid;
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	struct mm_struct *mm;
	struct files_struct *files;
	const struct cred *cred;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

/* BPF_PROG_LOAD's fd_array sits in one of the union's anonymous structs; CO-RE finds it by name. */
union bpf_attr {
	struct {
		__u64 fd_array;
	};
} __attribute__((preserve_access_index));

#endif /* BPFGATE_VMLINUX_H */
