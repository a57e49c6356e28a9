/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The hooks of kernels before 6.9 (Debian bookworm's 6.1), which have no security_bpf_prog_load,
 * bpf_map_create, bpf_map_free or bpf_prog_free hooks. The loader autoloads these instead of their 6.9+
 * counterparts when the kernel's BTF has no bpf_lsm_bpf_prog_load (HookVariant::Legacy), and sets
 * gate_fentry_scan.
 *
 * - fentry/bpf_check: the scan. bpf_prog_load() has copied the instructions into the kernel before it
 *   calls bpf_check(), and the verifier has not touched them yet; the task is the loader's. The same scan
 *   as at lsm/bpf_prog_load records the facts and the loader's subject by prog->aux. A fentry program
 *   cannot fail the call (and fmod_ret on bpf_check is refused): a denial is recorded (state denied) and
 *   enforced at lsm/bpf_prog, the first point where the program can be handed out (gate_prog_fd).
 * - lsm/bpf_prog_alloc_security: runs in BPF_PROG_LOAD alone, before bpf_check, and is never skipped (LSM
 *   programs have no recursion guard, fentry programs do): it records the load as unscanned, by prog->aux, with
 *   the loader's subject. The scan replaces that record; one still unscanned at lsm/bpf_prog is denied (fail
 *   closed), so a load the scan missed cannot pass for a program loaded before the gate attached.
 * - lsm/bpf_map_alloc_security, lsm/bpf_map_free_security, lsm/bpf_prog_free_security: map owners and
 *   the end of a program's records, as lsm/bpf_map_create, lsm/bpf_map_free and lsm/bpf_prog_free.
 */
#ifndef BPFGATE_LEGACY_BPF_H
#define BPFGATE_LEGACY_BPF_H

/*
 * bpf_check(struct bpf_prog **prog, union bpf_attr *attr, ...): the rest of its arguments differ between
 * kernels. 6.1's verifier refuses a typed read of a `struct bpf_prog **` argument from the context
 * ("arg0 type PTR is not a struct"), so both arguments are taken as numbers (bpf_get_func_arg, 5.17) and
 * read through probe reads.
 */
SEC("fentry/bpf_check")
int gate_check_scan(__u64 *ctx)
{
	__u64 progp = 0, attrp = 0;
	struct bpf_prog *prog = NULL;
	struct verdict v = {};

	if (bpf_get_func_arg(ctx, 0, &progp) || bpf_get_func_arg(ctx, 1, &attrp))
		return 0; /* cannot happen; no record: lsm/bpf_prog fails the load closed */
	if (bpf_probe_read_kernel(&prog, sizeof(prog), (void *)progp) || !prog)
		return 0;
	struct pending_load *ts =
		gate_scan(prog, BPF_CORE_READ((union bpf_attr *)attrp, fd_array), false, &v);

	if (ts && v.decision == GATE_VERDICT_DENY)
		ts->state |=
			GATE_LOAD_DENIED; /* the loader's own lsm/bpf_prog call refuses it, and everyone's */
	return 0;
}

SEC("lsm/bpf_prog_alloc_security")
int BPF_PROG(gate_prog_alloc, struct bpf_prog_aux *aux, int ret)
{
	struct pending_load *ts;

	if (ret)
		return ret;
	ts = new_pending_load((__u64)aux);
	if (!ts) {
		/* Fail closed: no room to record the load (its type is not known to the event here). */
		struct verdict v = {};

		deny_unrecorded_load(0, &v);
		return -EPERM;
	}
	record_loader(ts);
	ts->state = GATE_LOAD_UNSCANNED; /* no id yet: nothing else reads the record before bpf_check */
	return 0;
}

SEC("lsm/bpf_map_alloc_security")
int BPF_PROG(gate_map_alloc, struct bpf_map *map, int ret)
{
	if (ret)
		return ret;
	return gate_map_create(map);
}

SEC("lsm/bpf_map_free_security")
int BPF_PROG(gate_map_free_legacy, struct bpf_map *map)
{
	return gate_map_freed(map);
}

SEC("lsm/bpf_prog_free_security")
int BPF_PROG(gate_prog_free_legacy, struct bpf_prog_aux *aux)
{
	return gate_prog_freed(aux);
}

#endif /* BPFGATE_LEGACY_BPF_H */
