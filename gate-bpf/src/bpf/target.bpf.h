/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The attach target: the BTF name of attach_btf_id as the library names it, and whether it is one of the
 * hooks where a program could overrule the gate.
 */
#ifndef BPFGATE_TARGET_BPF_H
#define BPFGATE_TARGET_BPF_H

/*
 * Copies the name of BTF type `id` of `btf` (following split BTF to its base) into out, named as the
 * library names targets from sections: lsm/file_open, tp_btf/sched_switch, iter/task.
 */
static __always_inline int btf_type_name(struct btf *btf, __u32 id, __u32 prog_type, __u32 attach_type,
					 char *out)
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
	if (prog_type == BPF_PROG_TYPE_LSM && has_prefix(out, "bpf_lsm_", 8))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 8);
	else if (prog_type == BPF_PROG_TYPE_TRACING && attach_type == BPF_TRACE_RAW_TP &&
		 has_prefix(out, "btf_trace_", 10))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 10);
	else if (prog_type == BPF_PROG_TYPE_TRACING && attach_type == BPF_TRACE_ITER &&
		 has_prefix(out, "bpf_iter_", 9))
		bpf_probe_read_kernel_str(out, GATE_TARGET_LEN, strings + (name_off - str_off) + 9);
	return 0;
}

/*
 * lsm/bpf_prog_load and lsm/bpf_prog share these facts: a program on a hook where it could overrule
 * the gate (an lsm program on a bpf* hook, fmod_ret on bpf_lsm_bpf* or security_bpf*) needs a rule
 * that lists its target (bpfgate::policy::gate_hook).
 */
static __always_inline bool gate_hook_target(__u32 prog_type, __u32 attach_type, const char *t)
{
	if (prog_type == BPF_PROG_TYPE_LSM)
		return has_prefix(t, "bpf", 3);
	if (prog_type == BPF_PROG_TYPE_TRACING && attach_type == BPF_MODIFY_RETURN)
		return has_prefix(t, "bpf_lsm_bpf", 11) || has_prefix(t, "security_bpf", 12);
	return false;
}

#endif /* BPFGATE_TARGET_BPF_H */
