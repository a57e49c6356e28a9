/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Self-protection: the daemon is the one process the gate's own maps, programs and links obey.
 */
#ifndef BPFGATE_PROTECT_BPF_H
#define BPFGATE_PROTECT_BPF_H

/*
 * Set by the daemon before load (read-only afterwards): the one process the gate's objects obey, by
 * tgid and executable (a pid reused after the daemon died is not the daemon).
 */
const volatile __u32 gate_daemon_tgid = 0;
const volatile __u64 gate_daemon_dev = 0;
const volatile __u64 gate_daemon_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PROTECTED);
	__type(key, struct gate_object_key);
	__type(value, __u32);
} gate_objects SEC(".maps");

/* A request for one of the gate's own objects by anyone but its daemon: refused. */
static __always_inline void refuse_gate_object(struct verdict *v)
{
	v->decision = GATE_VERDICT_DENY;
	v->rule = GATE_RULE_DEFAULT;
	v->reasons = GATE_R_GATE_OBJECT;
	v->flags = GATE_F_GATE_OBJECT;
}

static __always_inline bool is_daemon(void)
{
	struct gate_subject s = {};

	if (!gate_daemon_tgid || (bpf_get_current_pid_tgid() >> 32) != gate_daemon_tgid)
		return false;
	current_subject(&s);
	return s.exe_dev == gate_daemon_dev && s.exe_ino == gate_daemon_ino;
}

static __always_inline bool gate_object(__u32 kind, __u32 id)
{
	struct gate_object_key k = { .kind = kind, .id = id };

	return id && bpf_map_lookup_elem(&gate_objects, &k);
}

#endif /* BPFGATE_PROTECT_BPF_H */
