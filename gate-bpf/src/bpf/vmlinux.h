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
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum bpf_prog_type {
	BPF_PROG_TYPE_UNSPEC = 0,
	BPF_PROG_TYPE_SOCKET_FILTER = 1,
	BPF_PROG_TYPE_LSM = 29,
};

struct bpf_prog_aux {
	char name[BPF_OBJ_NAME_LEN];
} __attribute__((preserve_access_index));

struct bpf_prog {
	enum bpf_prog_type type;
	struct bpf_prog_aux *aux;
} __attribute__((preserve_access_index));

/* Only passed through by pointer. */
union bpf_attr;
struct bpf_token;

#endif /* BPFGATE_VMLINUX_H */
