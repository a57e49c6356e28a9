/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers every concern uses: bit arithmetic, prefixes, the loading task as a subject.
 */
#ifndef BPFGATE_COMMON_BPF_H
#define BPFGATE_COMMON_BPF_H

static __always_inline __u64 bit_of(__u32 n)
{
	return n < 64 ? 1ULL << n : 0;
}

static __always_inline __u32 lowest_bit(__u64 m)
{
	__u32 n = 0;

	if (!(m & 0xffffffffULL)) {
		n += 32;
		m >>= 32;
	}
	if (!(m & 0xffffULL)) {
		n += 16;
		m >>= 16;
	}
	if (!(m & 0xffULL)) {
		n += 8;
		m >>= 8;
	}
	if (!(m & 0xfULL)) {
		n += 4;
		m >>= 4;
	}
	if (!(m & 0x3ULL)) {
		n += 2;
		m >>= 2;
	}
	if (!(m & 0x1ULL)) {
		n += 1;
	}
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
 * The loading task: executable, cgroup, real uid, all read through the task's BTF pointers: loads the JIT
 * guards against faults, as a probe read does, without a helper call per pointer or per field (this runs on
 * every fd by id). The uid and cgroup id are what bpf_get_current_uid_gid and bpf_get_current_cgroup_id
 * return. A task without mm (a kernel thread) reads NULLs, and zeros from them: no exe.
 */
static __always_inline void current_subject(struct gate_subject *s)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mm_struct *mm = task->mm;
	struct file *exe_file = mm ? mm->exe_file : NULL;

	s->uid = task->cred->uid.val;
	s->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	if (exe_file) {
		struct inode *inode = exe_file->f_inode;

		if (inode) {
			s->exe_ino = inode->i_ino;
			s->exe_dev = inode->i_sb ? inode->i_sb->s_dev : 0;
		}
	}
}

/*
 * A load's subject, cgroup path and task, recorded in its pending_loads entry by the loading task: the final
 * decision can run in another task's call (lsm/bpf_prog for an open by id), where "current" is that task.
 */
static __always_inline void record_loader(struct pending_load *ts)
{
	current_subject(&ts->facts.subject);
	ts->pid_tgid = bpf_get_current_pid_tgid();
	bpf_get_current_comm(ts->comm, sizeof(ts->comm));
	for (int level = 0; level < GATE_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		ts->cgroups.ids[level] = id;
		if (!id)
			break;
	}
}

static __always_inline bool same_subject(const struct gate_subject *a, const struct gate_subject *b)
{
	return a->exe_dev == b->exe_dev && a->exe_ino == b->exe_ino && a->cgroup_id == b->cgroup_id &&
	       a->uid == b->uid;
}

#endif /* BPFGATE_COMMON_BPF_H */
