// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only smoke program for the live-kernel harness (issue 4): denies loading any BPF
 * program named "bpfgate_smoke" and nothing else, so the test can prove that an LSM program
 * on lsm/bpf_prog_load attaches and enforces on the kernel under test.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define EPERM 1

/* Count of denials, read by the test to prove the hook (not something else) said no. */
__u64 denied = 0;

static __always_inline bool is_smoke_name(const char *name)
{
	static const char want[] = "bpfgate_smoke";

	for (int i = 0; i < (int)sizeof(want); i++)
		if (name[i] != want[i])
			return false;
	return true;
}

/* Refuses the smoke test's own program (by name), counting it. */
static __always_inline int smoke_deny(struct bpf_prog *prog)
{
	char name[BPF_OBJ_NAME_LEN] = {};

	if (bpf_core_read(&name, sizeof(name), &prog->aux->name) < 0)
		return 0;
	if (!is_smoke_name(name))
		return 0;
	__sync_fetch_and_add(&denied, 1);
	return -EPERM;
}

/*
 * The hook has (prog, attr, token) on 6.12 and gains "bool kernel" from 6.16; using only the
 * first argument keeps this one program valid on both.
 */
SEC("lsm/bpf_prog_load")
int BPF_PROG(bpfgate_smoke_deny, struct bpf_prog *prog)
{
	return smoke_deny(prog);
}

/*
 * Kernels without lsm/bpf_prog_load (6.1): the same denial where the program's fd is made (lsm/bpf_prog), which
 * fails the load. The test loads whichever of the two the kernel has (the other is not autoloaded).
 */
SEC("lsm/bpf_prog")
int BPF_PROG(bpfgate_smoke_deny_fd, struct bpf_prog *prog)
{
	return smoke_deny(prog);
}

char LICENSE[] SEC("license") = "GPL";
