/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The compiled policy in two slots (bpfgate::policy::compiled) and compiled::evaluate over it: the rule
 * for a subject, then the rule's checks, the map rules included.
 */
#ifndef BPFGATE_POLICY_BPF_H
#define BPFGATE_POLICY_BPF_H

/* Which policy slot decisions read; the daemon flips it after filling the other slot. */
volatile __u32 gate_active_slot = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS);
	__type(key, __u32);
	__type(value, struct gate_policy_header);
} policy_header SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_RULES);
	__type(key, __u32);
	__type(value, struct gate_rule);
} policy_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_TARGET_PATTERNS);
	__type(key, __u32);
	__type(value, struct gate_pattern);
} policy_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_MAP_PATTERNS);
	__type(key, __u32);
	__type(value, struct gate_map_pattern);
} policy_map_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_exe_key);
	__type(value, __u64);
} policy_exe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_cgroup_key);
	__type(value, __u64);
} policy_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_SLOTS * GATE_MAX_SUBJECT_KEYS);
	__type(key, struct gate_uid_key);
	__type(value, __u64);
} policy_uid SEC(".maps");

/*
 * Never read by the program. Updating a map-in-map makes the bpf() syscall wait for an RCU grace
 * period, so after flipping gate_active_slot the daemon updates this map to know that no decision
 * still reads the old slot before it rewrites it.
 */
struct sync_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct sync_inner);
} sync_rcu SEC(".maps");

struct match_ctx {
	__u32 base;
	__u32 first;
	__u32 matched;
	__u32 reserved;
	const char *target; /* GATE_TARGET_LEN bytes */
};

static long match_target(__u64 i, void *data)
{
	struct match_ctx *m = data;
	__u32 idx = m->base + m->first + (__u32)i;
	struct gate_pattern *p = bpf_map_lookup_elem(&policy_targets, &idx);
	__u32 len;

	if (!p)
		return 1;
	len = p->len;
	if (len > GATE_TARGET_PATTERN_LEN)
		return 0;
	for (__u32 k = 0; k < GATE_TARGET_PATTERN_LEN; k++) {
		if (k >= len)
			break;
		if (p->text[k] != m->target[k])
			return 0;
	}
	if (p->kind == GATE_PATTERN_PREFIX || (p->kind == GATE_PATTERN_EXACT && m->target[len] == 0)) {
		m->matched = 1;
		return 1;
	}
	return 0;
}

static __always_inline void finish(struct verdict *v, __u8 decision, __u32 rule, __u32 reasons,
				   bool audit_mode)
{
	v->decision = (audit_mode && decision == GATE_VERDICT_DENY) ? GATE_VERDICT_AUDIT : decision;
	v->rule = rule;
	v->reasons = reasons;
}

/* The policy's default action, for a subject no rule matches. */
static __always_inline void finish_default(struct verdict *v, const struct gate_policy_header *h,
					   bool audit_mode)
{
	if (h->default_action == GATE_ACTION_ALLOW)
		finish(v, GATE_VERDICT_ALLOW, GATE_RULE_DEFAULT, 0, audit_mode);
	else if (h->default_action == GATE_ACTION_AUDIT)
		finish(v, GATE_VERDICT_AUDIT, GATE_RULE_DEFAULT, GATE_R_NO_RULE, audit_mode);
	else
		finish(v, GATE_VERDICT_DENY, GATE_RULE_DEFAULT, GATE_R_NO_RULE, audit_mode);
}

/* The policy in force and the rule for a subject (compiled::evaluate's first half). */
struct rule_match {
	struct gate_policy_header *h;
	struct gate_rule *r; /* NULL: no rule matched, the default decides */
	__u32 slot;
	__u32 id;
};

/*
 * Out of line: its map keys get their own stack frame. Returns false when no valid policy is installed. The
 * subject's cgroup ancestry is `cgroups` when given (a loader's, recorded at its load), the current task's
 * otherwise.
 */
static __noinline bool match_rule(const struct gate_subject *s, const struct cgroup_path *cgroups,
				  struct rule_match *out)
{
	__u32 slot = gate_active_slot & 1; /* read once: the whole decision uses one generation */
	struct gate_policy_header *h = bpf_map_lookup_elem(&policy_header, &slot);
	__u64 valid, exe = 0, cg = 0, uid = 0, cand, *m;

	out->r = NULL;
	out->id = GATE_RULE_DEFAULT;
	out->slot = slot;
	if (!h || h->magic != GATE_MAGIC || h->format_version != GATE_FORMAT_VERSION)
		return false;
	out->h = h;
	valid = h->rule_count >= GATE_MAX_RULES ? ~0ULL : (1ULL << h->rule_count) - 1;

	struct gate_exe_key ek = { .slot = slot, .dev = s->exe_dev, .ino = s->exe_ino };
	m = bpf_map_lookup_elem(&policy_exe, &ek);
	if (m)
		exe = *m;
	exe |= h->exe_any;

	/* The cgroup and its ancestors, from the root (level 0) down. */
	for (int level = 0; level < GATE_MAX_CGROUP_DEPTH; level++) {
		__u64 id = cgroups ? cgroups->ids[level] : bpf_get_current_ancestor_cgroup_id(level);

		if (!id)
			break;
		struct gate_cgroup_key ck = { .slot = slot, .id = id };
		m = bpf_map_lookup_elem(&policy_cgroup, &ck);
		if (m)
			cg |= *m;
	}
	cg |= h->cgroup_any;

	struct gate_uid_key uk = { .slot = slot, .uid = s->uid };
	m = bpf_map_lookup_elem(&policy_uid, &uk);
	if (m)
		uid = *m;
	uid |= h->uid_any;

	cand = exe & cg & uid & valid;
	if (cand) {
		out->id = lowest_bit(cand);
		__u32 ridx = slot * GATE_MAX_RULES + out->id;
		out->r = bpf_map_lookup_elem(&policy_rules, &ridx);
		if (!out->r)
			out->id = GATE_RULE_DEFAULT; /* cannot happen: ids are below GATE_MAX_RULES */
	}
	return true;
}

struct map_check {
	const struct used_maps *um;
	struct gate_rule *r;
	__u32 slot;
	__u32 bad; /* index + 1 of the first map the rule refuses */
};

/* Whether map name `name` matches one of the rule's maps.named patterns. */
struct name_ctx {
	const char *name;
	__u32 base;
	__u32 matched;
};

static long match_map_name(__u64 i, void *data)
{
	struct name_ctx *n = data;
	__u32 idx = n->base + (__u32)i;
	struct gate_map_pattern *p = bpf_map_lookup_elem(&policy_map_names, &idx);
	__u32 len;

	if (!p)
		return 1;
	len = p->len;
	if (len > GATE_NAME_LEN - 1)
		return 0;
	for (__u32 k = 0; k < GATE_NAME_LEN - 1; k++) {
		if (k >= len)
			break;
		if (p->text[k] != n->name[k])
			return 0;
	}
	if (p->kind == GATE_PATTERN_PREFIX || (p->kind == GATE_PATTERN_EXACT && n->name[len & 15] == 0)) {
		n->matched = 1;
		return 1;
	}
	return 0;
}

/* Whether a rule lets a program write map `m` (compiled::evaluate's written-map check). */
static __always_inline bool map_write_ok(struct gate_rule *r, __u32 slot, const struct used_map *m)
{
	bool pinned_ok = r->flags & GATE_RULE_PINNED_OK;
	struct name_ctx n = { .name = m->name, .base = slot * GATE_MAX_MAP_PATTERNS + r->map_first };

	bpf_loop(r->map_count, match_map_name, &n, 0);
	if (n.matched)
		return true;
	if (r->map_write == GATE_MAP_WRITE_ANY)
		return pinned_ok || !m->pinned;
	if (r->map_write == GATE_MAP_WRITE_OWN)
		return m->own && (pinned_ok || !m->pinned);
	return false;
}

static long check_used_map(__u64 i, void *data)
{
	struct map_check *mc = data;

	if (i >= GATE_MAX_USED_MAPS)
		return 1;
	if (!map_write_ok(mc->r, mc->slot, &mc->um->maps[i])) {
		mc->bad = (__u32)i + 1;
		return 1;
	}
	return 0;
}

/*
 * The first steps of compiled::evaluate, for a load or a map open by subject `s`: without a policy,
 * allow; without a matching rule, the default (deny for a program on the gate's own hooks, which
 * needs a rule that names its target); a deny rule denies. Returns whether rm->r still has to judge.
 */
static __always_inline bool rule_for(const struct gate_subject *s, const struct cgroup_path *cgroups,
				     struct verdict *v, struct rule_match *rm, bool gate_hook)
{
	bool audit_mode;

	if (!match_rule(s, cgroups, rm) || !rm->h) {
		v->flags |= GATE_F_NO_POLICY;
		v->rule = GATE_RULE_DEFAULT;
		v->decision = GATE_VERDICT_ALLOW;
		return false;
	}
	v->generation = rm->h->generation;
	audit_mode = rm->h->mode == GATE_MODE_AUDIT;
	if (audit_mode)
		v->flags |= GATE_F_AUDIT_MODE;
	if (!rm->r) {
		if (gate_hook)
			finish(v, GATE_VERDICT_DENY, GATE_RULE_DEFAULT, GATE_R_NO_RULE | GATE_R_ATTACH_TARGET,
			       audit_mode);
		else
			finish_default(v, rm->h, audit_mode);
		return false;
	}
	if (rm->r->action == GATE_ACTION_DENY || rm->r->action > GATE_ACTION_AUDIT) {
		finish(v, GATE_VERDICT_DENY, rm->id, GATE_R_RULE_DENIES, audit_mode);
		return false;
	}
	return true;
}

/*
 * compiled::evaluate, step by step, for subject `s` of cgroup path `cgroups` (NULL: the current task's). `um`
 * is NULL at lsm/bpf_prog_load, where the verifier has not yet bound the program's maps: the map rules are
 * then left to lsm/bpf_prog. v->bad_map receives the index + 1 of the first map a rule refused. A global
 * function: the verifier checks it once, on its own, instead of once per state of each caller.
 */
__noinline int gate_evaluate(const struct facts *f, const struct gate_subject *s,
			     const struct cgroup_path *cgroups, struct verdict *v, const struct used_maps *um)
{
	struct rule_match rm = {};

	if (!f || !s || !v)
		return 0;
	if (!rule_for(s, cgroups, v, &rm, f->gate_hook))
		return 0;
	struct gate_rule *r = rm.r;
	bool audit_mode = v->flags & GATE_F_AUDIT_MODE;
	__u32 id = rm.id;
	__u32 reasons = 0;

	/* A loader's feature probe (bpfgate::policy::Probes) skips the type, attach and size checks. */
	bool probe = r->probe_insns && f->insn_cnt <= r->probe_insns &&
		     (r->probe_types & bit_of(f->prog_type)) && !(f->classes & ~BPFGATE_CLASS_MAP_WRITE) &&
		     !f->gate_hook;

	if (probe)
		goto classes;
	if ((r->flags & GATE_RULE_PROG_TYPES) && !(r->prog_types & bit_of(f->prog_type)))
		reasons |= GATE_R_PROG_TYPE;
	if (f->has_attach_type && (r->flags & GATE_RULE_ATTACH_TYPES) &&
	    !(r->attach_types & bit_of(f->attach_type)))
		reasons |= GATE_R_ATTACH_TYPE;
	if (r->flags & GATE_RULE_ATTACH_TARGETS) {
		bool ok;

		if (f->has_target) {
			/* bpf_loop's context must be on this function's stack. */
			struct match_ctx lm = {
				.base = rm.slot * GATE_MAX_TARGET_PATTERNS,
				.first = r->target_first,
				.target = f->target,
			};

			bpf_loop(r->target_count, match_target, &lm, 0);
			ok = lm.matched;
		} else {
			ok = !traced_type(f->prog_type);
		}
		if (!ok)
			reasons |= GATE_R_ATTACH_TARGET;
	} else if (f->gate_hook) {
		reasons |= GATE_R_ATTACH_TARGET;
	}
	if (f->insn_cnt > r->max_insns)
		reasons |= GATE_R_INSNS;
classes:
	if ((f->classes & r->denied_classes) || (f->classes & ~r->allowed_classes))
		reasons |= GATE_R_CLASS;
	if (um && (f->classes & BPFGATE_CLASS_MAP_WRITE)) {
		bool pinned_ok = r->flags & GATE_RULE_PINNED_OK;
		__u32 n = um->count < GATE_MAX_USED_MAPS ? um->count : GATE_MAX_USED_MAPS;
		struct map_check chk = { .um = um, .r = r, .slot = rm.slot };

		/* Every map the program can write is taken as written: the gate does not track which. */
		bpf_loop(n, check_used_map, &chk, 0);
		if (chk.bad) {
			reasons |= GATE_R_MAP;
			v->bad_map = chk.bad;
		}
		if ((um->unattributed || n == 0) && (r->map_write != GATE_MAP_WRITE_ANY || !pinned_ok))
			reasons |= GATE_R_MAP;
	}

	if (r->action == GATE_ACTION_AUDIT)
		finish(v, GATE_VERDICT_AUDIT, id, reasons, audit_mode);
	else
		finish(v, reasons ? GATE_VERDICT_DENY : GATE_VERDICT_ALLOW, id, reasons, audit_mode);
	return 0;
}

#endif /* BPFGATE_POLICY_BPF_H */
