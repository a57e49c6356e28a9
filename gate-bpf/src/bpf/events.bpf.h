/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Events: one per decision on the ring buffer (struct gate_event, gate_abi.h), the counters the daemon
 * reads, and the per-CPU count of events lost to a full ring buffer.
 */
#ifndef BPFGATE_EVENTS_BPF_H
#define BPFGATE_EVENTS_BPF_H

/* Counters the daemon and the tests read. */
__u64 gate_decisions = 0;
__u64 gate_denials = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Events lost because the ring buffer was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&dropped, &zero);

	if (n)
		*n += 1; /* per-CPU slot: no other writer */
}

/*
 * Decisions per policy slot, rule (GATE_MAX_RULES: the default), kind (loads, opens) and verdict, plus the
 * refusals of the gate's own objects (bpfgate::gate_abi::counter_index): per CPU, read by `bpfgate status` and
 * the metrics. A slot's counters belong to the generation in it (slot = generation & 1); the daemon adds them
 * to its totals and zeroes them before the slot is reused. Cost: one array lookup and an add per decision
 * that has an event (loads, and fds to others' objects); the hot paths that make no event (lsm/bpf, a
 * loader's own or read-only map fds) never count.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GATE_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} decision_counts SEC(".maps");

static __always_inline void gate_count_decision(__u32 op, const struct verdict *v)
{
	__u32 rule = v->rule < GATE_MAX_RULES ? v->rule : GATE_MAX_RULES;
	__u32 kind = op == GATE_OP_PROG_LOAD || op == GATE_OP_PROG_MAPS ? GATE_COUNT_LOADS : GATE_COUNT_OPENS;
	__u32 i = (((__u32)(v->generation & 1) * (GATE_MAX_RULES + 1) + rule) * GATE_COUNT_KINDS + kind) *
			  GATE_COUNT_VERDICTS +
		  (v->decision < GATE_COUNT_VERDICTS ? v->decision : GATE_VERDICT_DENY);
	__u64 *n;

	if (v->flags & GATE_F_GATE_OBJECT)
		i = GATE_COUNT_GATE_OBJECT;
	n = bpf_map_lookup_elem(&decision_counts, &i);
	if (n)
		*n += 1; /* per-CPU slot: no other writer */
}

/*
 * Reserves an event with the fields every operation has; NULL (counted) when the ring buffer is full. Counts
 * the decision, but for map creations (not a decision) and loads allowed so far (lsm/bpf_prog counts those
 * at their final decision).
 */
static __always_inline struct gate_event *new_event(__u32 op, const struct gate_subject *s,
						    const struct verdict *v)
{
	struct gate_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	__sync_fetch_and_add(&gate_decisions, 1);
	if (v->decision == GATE_VERDICT_DENY)
		__sync_fetch_and_add(&gate_denials, 1);
	if (op != GATE_OP_MAP_CREATE && op != GATE_OP_PROG_MAPS &&
	    (op != GATE_OP_PROG_LOAD || v->decision == GATE_VERDICT_DENY))
		gate_count_decision(op, v);
	if (!e) {
		count_drop();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_boot_ns();
	e->generation = v->generation;
	e->exe_dev = s->exe_dev;
	e->exe_ino = s->exe_ino;
	e->cgroup_id = s->cgroup_id;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->uid = s->uid;
	e->op = op;
	e->reasons = v->reasons;
	e->rule = v->rule;
	e->verdict = v->decision;
	e->flags = v->flags | (v->decision == GATE_VERDICT_DENY ? GATE_F_ENFORCED : 0);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/*
 * An event about a load's final decision names the loader recorded at the load, whoever's call decided: the
 * program's first fd can be another task's open by id (then flagged).
 */
static __always_inline void event_loader(struct gate_event *e, const struct pending_load *ts)
{
	if (e->tgid != (__u32)(ts->pid_tgid >> 32))
		e->scan_flags |= GATE_SCAN_OTHER_TASK;
	e->pid = (__u32)ts->pid_tgid;
	e->tgid = ts->pid_tgid >> 32;
	__builtin_memcpy(e->comm, ts->comm, sizeof(e->comm));
}

/* What an event about a load or a loaded program says of the program. */
static __always_inline void event_program(struct gate_event *e, const struct facts *f,
					  struct bpf_prog_aux *aux)
{
	e->prog_type = f->prog_type;
	e->attach_type = f->attach_type;
	e->insn_cnt = f->insn_cnt;
	e->classes = f->classes & ~f->maybe_classes;
	e->maybe_classes = f->maybe_classes;
	if (bpf_probe_read_kernel(e->name, sizeof(e->name), &aux->name))
		e->name[0] = 0;
	__builtin_memcpy(e->target, f->target, sizeof(e->target));
}

#endif /* BPFGATE_EVENTS_BPF_H */
