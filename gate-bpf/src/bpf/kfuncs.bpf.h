/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kfuncs: their classes by BTF object and id (filled by the loader), the module BTF a call names through
 * fd_array, and the check at lsm/bpf_prog that the verifier bound the same module BTFs.
 */
#ifndef BPFGATE_KFUNCS_BPF_H
#define BPFGATE_KFUNCS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_KFUNCS);
	__type(key, struct gate_kfunc_key);
	__type(value, __u64);
} kfunc_classes SEC(".maps");

/*
 * The module BTF object of each catalogued module kfunc's BTF id that only one loaded module has (filled
 * by the loader beside kfunc_classes): the object a call names when its fd_array slot cannot be read.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_KFUNCS);
	__type(key, __u32);
	__type(value, __u32);
} module_kfunc_owners SEC(".maps");

/*
 * The BTF object a module kfunc call (BTF id btf_id) names: its off indexes the load's fd_array (user
 * memory, or kernel memory for a load from the kernel), whose fd this task holds. A slot on a page not
 * mapped now cannot be read here (no faults): the one module with a catalogued kfunc at btf_id is taken
 * instead. The verifier reads fd_array again later, so lsm/bpf_prog checks the objects it bound against
 * these either way (kfunc_btfs_changed). 0 when unresolved, or past GATE_KFUNC_BTFS distinct indexes: the
 * call is then unknown.
 */
__noinline __u32 gate_module_btf(struct scan_ctx *c, __s32 off, __u32 btf_id)
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

	if (!bpf_probe_read_user(&fd, sizeof(fd), slot) || !bpf_probe_read_kernel(&fd, sizeof(fd), slot)) {
		fdt = BPF_CORE_READ(task, files, fdt);
		if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
			return 0;
		fds = BPF_CORE_READ(fdt, fd);
		if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
			return 0;
		/* Not checked to be a BTF fd: if it is not, the verifier refuses the load or binds another object. */
		btf = BPF_CORE_READ(file, private_data);
		id = btf ? BPF_CORE_READ(btf, id) : 0;
	} else {
		__u32 *owner = bpf_map_lookup_elem(&module_kfunc_owners, &btf_id);

		c->flags |= SCAN_FD_ARRAY_UNREAD;
		id = owner ? *owner : 0;
	}
	if (!id)
		return 0;
	c->kfunc_btfs[n & (GATE_KFUNC_BTFS - 1)].off = off;
	c->kfunc_btfs[n & (GATE_KFUNC_BTFS - 1)].obj_id = id;
	c->kfunc_btf_cnt = n + 1;
	return id;
}

struct btf_match_ctx {
	struct pending_load *ts;
	__u64 first;
	__u64 stride;
	__u32 n;
	__u32 matched;
};

/*
 * One descriptor of aux->kfunc_btf_tab against the scan's indexes. A bpf_loop callback, not a loop: 6.1's
 * verifier walks a bounded loop whose bit mask changes per iteration state by state past its 1M limit.
 */
static long match_kfunc_btf(__u64 i, void *data)
{
	struct btf_match_ctx *m = data;
	struct pending_load *ts = m->ts;
	struct bpf_kfunc_btf *d = (struct bpf_kfunc_btf *)(m->first + i * m->stride);
	__u32 off = BPF_CORE_READ(d, offset);
	__u32 id = BPF_CORE_READ(d, btf, id);

#pragma unroll
	for (__u32 k = 0; k < GATE_KFUNC_BTFS; k++)
		if (k < m->n && ts->scan.kfunc_btfs[k].off == off && ts->scan.kfunc_btfs[k].obj_id == id)
			m->matched |= 1U << k;
	return 0;
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
	__u32 n = ts->scan.kfunc_btf_cnt;

	if (!n)
		return false;
	if (!bpf_core_type_exists(struct bpf_kfunc_btf_tab))
		return true;
	struct bpf_kfunc_btf_tab *tab = BPF_CORE_READ(aux, kfunc_btf_tab);
	if (!tab)
		return true;
	__u32 nr = BPF_CORE_READ(tab, nr_descs);
	struct btf_match_ctx m = {
		.ts = ts,
		.first = (__u64)tab + bpf_core_field_offset(struct bpf_kfunc_btf_tab, descs),
		.stride = bpf_core_type_size(struct bpf_kfunc_btf),
		.n = n,
	};

	bpf_loop(nr < 256 ? nr : 256, match_kfunc_btf, &m, 0);
	return m.matched != (1U << (n & 31)) - 1;
}

#endif /* BPFGATE_KFUNCS_BPF_H */
