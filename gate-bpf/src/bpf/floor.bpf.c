// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark-only (gate-load-bench --syscalls): LSM programs that decide nothing on the hooks an fd by id runs,
 * lsm/bpf_map and lsm/bpf_prog, where the gate has its programs. What the benchmark measures with these instead of
 * the gate is the floor of any BPF LSM program there: the trampoline, and a program that only counts its calls
 * (which the benchmark checks, so a floor that never ran cannot pass for a cheap one).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* Calls of either program; one CPU runs the benchmark's child at a time, so no atomic is needed. */
__u64 calls = 0;

SEC("lsm/bpf_map")
int BPF_PROG(floor_map, struct bpf_map *map, unsigned int fmode, int ret)
{
	calls++;
	return ret;
}

SEC("lsm/bpf_prog")
int BPF_PROG(floor_prog, struct bpf_prog *prog, int ret)
{
	calls++;
	return ret;
}

char LICENSE[] SEC("license") = "GPL";
