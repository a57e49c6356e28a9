// SPDX-License-Identifier: GPL-2.0
/*
 * The gate: BPF LSM programs that decide, from the instructions the kernel has copied (no TOCTOU),
 * the maps the verifier bound and the loading task, whether a program may load, by the compiled
 * policy the daemon keeps in this object's maps (bpfgate::policy::compiled; the algorithm is
 * compiled::evaluate, mirrored step by step in gate_evaluate below).
 *
 * Hooks:
 * - lsm/bpf (every bpf() call; attached only where a link fd could detach or replace a gate program, or on
 *   request): refuses BPF_LINK_GET_FD_BY_ID of the gate's own links to anyone but its daemon.
 * - fentry/fexit bpf_obj_get_user: note the thread inside BPF_OBJ_GET for lsm/bpf_map.
 * - lsm/bpf_prog_load (6.9+; on 6.1 fentry/bpf_check, legacy.bpf.h): scans the program and decides
 *   everything but the map rules.
 * - lsm/bpf_prog (an fd to a program is made: right after a load's verification, or by id or pin):
 *   for a load, the final decision with the maps the verifier bound (aux->used_maps), stored with a
 *   compare-and-swap so concurrent first calls agree; otherwise it refuses fds to the gate's own
 *   programs to anyone but its daemon, and a program another subject loaded to anyone whose rule
 *   would not let it load that program.
 * - lsm/bpf_prog_free (6.1: lsm/bpf_prog_free_security): drops a program's records.
 * - lsm/bpf_map_create, lsm/bpf_map_free (6.1: lsm/bpf_map_alloc_security, lsm/bpf_map_free_security):
 *   map owners (the creating subject), by map address.
 * - lsm/bpf_map (an fd to a map is made): a writable fd to another subject's map needs the subject's
 *   rule to allow writing it; a writable fd to the gate's own maps only goes to its daemon; a map
 *   reached through a pin (BPF_OBJ_GET) is marked pinned.
 *
 * What the gate computes, per program (bpfgate::kernel_view computes the same from an object, and the
 * live conformance test requires the two to be equal):
 * - classes: exactly the classes the library derives from calls: helper classes from the catalogue
 *   table compiled in (bpfgate_catalogue.h; ids past its end are `unknown`), kfunc classes from the
 *   kfunc_classes map the loader fills from vmlinux's and the loaded modules' BTF (kfuncs not in it are
 *   `unknown`), tail_call (helper 12), override_return for BPF_MODIFY_RETURN programs, and `unknown` for an
 *   indirect call (callx). A module kfunc call names its BTF by an index into the loader's fd_array: the
 *   scan reads that fd's BTF object (gate_module_btf), and lsm/bpf_prog checks that the verifier bound
 *   the same ones (kfunc_btfs_changed), so a loader that rewrites fd_array meanwhile gains nothing.
 * - maybe_classes: kernel_read, map_write and packet_write, which the library proves by dataflow, from
 *   a tag pass (bpfgate::kernel_view, the rules in full): a marking pass over the instructions marks jump
 *   and call targets in this CPU's jump_targets entry and notes what callbacks may get (only for programs
 *   with a backward jump or call, an indirect jump or a function's address: elsewhere the tag pass marks
 *   each forward target as it meets the jump, scan_program); the tag pass tags
 *   what each register and stack slot may hold (scalar, context, stack, packet, BTF pointer, map value,
 *   other pointer, unknown), carries a forward jump's state to its target (a direct-mapped table of
 *   GATE_JOIN_SLOTS pending targets), starts a function with what earlier calls passed it (and what
 *   callbacks get), resets to unknown where the state comes from code not scanned yet (a backward
 *   jump's or call's target, a forward target the table could not keep), and counts
 *     kernel_read  for a load through a BTF pointer, or through an unknown register in a program that
 *                  can hold one (BTF-typed type, kfunc call, helper returning a BTF pointer, BTF id, or,
 *                  known at lsm/bpf_prog, a used map that may hold kptrs: map->record, map-in-map);
 *     map_write    for a store, atomic or writing call through a map value, or through an unknown
 *                  register in a program that references a map;
 *     packet_write the same through a packet pointer, or an unknown register in a packet program type.
 *   A superset of the library's classes (equal on every fixture; the library also follows pointers
 *   across loops, out of subprograms and through a caller's stack). The policy check uses classes |
 *   maybe_classes. A load preempted on its CPU by another load's scan finds jump_targets taken over
 *   (owner changed) and counts the three by their preconditions alone (event scan_flags
 *   GATE_SCAN_CONTENDED).
 * - map rules: a program with map_write (proved or conservative) is taken to write every map it
 *   uses that programs can write (not BPF_F_RDONLY_PROG: .rodata, .kconfig); each must pass the
 *   rule (maps.named, then write any/own/none and pinned) with "own" meaning created by the same
 *   subject (exe, cgroup, uid) while the gate was attached. A map-in-map makes the write
 *   unattributed (its inner maps are not in used_maps), as does map_write with no writable map.
 * - attach target: the BTF name of attach_btf_id (fentry/fexit/fmod_ret/lsm/tp_btf/iter/ext), with
 *   bpf_lsm_ (lsm), btf_trace_ (tp_btf) and bpf_iter_ (iter) stripped as the library names them.
 *   kprobe, tracepoint and raw_tracepoint programs learn their target only at attach time: here they
 *   have none, so a rule with attach_targets refuses them (compiled::evaluate with attach_target
 *   None). An lsm program on a bpf* hook, or fmod_ret on bpf_lsm_bpf* / security_bpf*, could
 *   overrule the gate: it needs a rule that lists attach_targets (bpfgate::policy::gate_hook).
 *
 * Layout: this file is the one compilation unit; it holds the hooks and the state of loads in flight, and
 * includes the concerns beside it (the libbpf-rs examples' way, NAME.bpf.c and its headers):
 *   types.bpf.h    the BPF side's own records (scan state, facts, verdict, used maps, a load in flight)
 *   common.bpf.h   bit helpers and the loading task as a subject
 *   events.bpf.h   the ring buffer, counters, new_event
 *   target.bpf.h   the attach target's name, and the gate's own hooks
 *   policy.bpf.h   the policy slots and compiled::evaluate (gate_evaluate)
 *   protect.bpf.h  self-protection (the daemon, the gate's own objects)
 *   kfuncs.bpf.h   kfunc classes, module BTFs by fd_array
 *   scan.bpf.h     the scan (bpfgate::kernel_view)
 *   owners.bpf.h   map owners, the maps a program uses, program loaders (gate_prog_open)
 *   legacy.bpf.h   the hooks of kernels without security_bpf_prog_load (6.1), included last
 * and the headers build.rs generates from the library: gate_abi.h (the records and constants shared with the
 * loader, with static asserts on their layout: bpfgate::gate_abi), bpfgate_catalogue.h, gate_scan.h and
 * gate_progtypes.h. Instruction fields are read with the uapi names (vmlinux.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "gate_abi.h" /* generated by build.rs: limits, shared records, flags, reasons, event constants */
#include "bpfgate_catalogue.h" /* generated by build.rs: class bits, bpfgate_helper_classes */
#include "gate_scan.h" /* generated by build.rs: tags, what helpers return and write */
#include "gate_progtypes.h" /* generated by build.rs: btf_typed, packet_type, traced_type */

char LICENSE[] SEC("license") = "GPL";

#include "types.bpf.h"
#include "common.bpf.h"
#include "events.bpf.h"
#include "target.bpf.h"
#include "policy.bpf.h"
#include "protect.bpf.h"
#include "kfuncs.bpf.h"
#include "scan.bpf.h"
#include "owners.bpf.h"

/*
 * Set by the loader on kernels without lsm/bpf_prog_load (6.1): loads are scanned at fentry/bpf_check
 * (legacy.bpf.h) and decided at lsm/bpf_prog.
 */
const volatile bool gate_fentry_scan = false;

/* Loads in flight at once; when full, loads are denied (fail closed). */
#define GATE_MAX_PENDING 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PENDING);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct pending_load);
} pending_loads SEC(".maps");

/* Numbers pending_loads records (their state word), so a stale reader's compare-and-swap cannot decide a new one. */
volatile __u64 gate_load_seq = 0;

/* All zeros, never written: the initial value of a pending_loads entry (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending_load);
} pending_zero SEC(".maps");

/*
 * The records in pending_loads, never fewer: raised before a record is made, lowered after one is deleted (by
 * the call whose delete found it). lsm/bpf_prog skips its lookup while this is 0, which most fds by id find:
 * a record is only pending while its load is in flight. That skip is safe because a program has a record before
 * it has an id (the record is made at the load's scan, the id after verification, published under the id
 * lock that an open by id takes), so an open that finds the program by id also reads this raised.
 */
__s64 pending_records = 0;

/* A fresh pending_loads record for `key`, all zeros; NULL when there is no room (the caller fails closed). */
static __always_inline struct pending_load *new_pending_load(__u64 key)
{
	__u32 zero = 0;
	struct pending_load *zeros = bpf_map_lookup_elem(&pending_zero, &zero);
	long err;

	if (!zeros)
		return NULL;
	__sync_fetch_and_add(&pending_records, 1);
	err = bpf_map_update_elem(&pending_loads, &key, zeros, BPF_NOEXIST);
	if (err) {
		__sync_fetch_and_add(&pending_records, -1);
		/* A stale record under this key (counted already) is reset; one deleted meanwhile fails closed. */
		if (err != -EEXIST || bpf_map_update_elem(&pending_loads, &key, zeros, BPF_EXIST))
			return NULL;
	}
	return bpf_map_lookup_elem(&pending_loads, &key);
}

/* Deletes `key`'s pending_loads record, if it has one, and counts it out. */
static __always_inline void drop_pending_load(__u64 key)
{
	if (!bpf_map_delete_elem(&pending_loads, &key))
		__sync_fetch_and_add(&pending_records, -1);
}

/* A load with no room for its record: denied (fail closed), with its event; the verdict goes to `v`. */
static __always_inline void deny_unrecorded_load(__u32 prog_type, struct verdict *v)
{
	struct gate_subject s = {};

	current_subject(&s);
	v->decision = GATE_VERDICT_DENY;
	v->rule = GATE_RULE_DEFAULT;
	struct gate_event *e = new_event(GATE_OP_PROG_LOAD, &s, v);

	if (e) {
		e->prog_type = prog_type;
		bpf_ringbuf_submit(e, 0);
	}
}

/*
 * Scans a load's instructions (the kernel's copy, before the verifier touches them), judges everything
 * but the map rules into `v`, sends the load event, and returns the load's pending_loads record (state
 * pending, with a fresh sequence number), or NULL when there was no room to record it (the event then
 * says denied: the caller fails closed). Called at lsm/bpf_prog_load (6.9+) and fentry/bpf_check (6.1).
 */
static __always_inline struct pending_load *gate_scan(struct bpf_prog *prog, __u64 fd_array, bool kernel,
						      struct verdict *vp)
{
	struct verdict v = {};
	struct bpf_prog_aux *aux = BPF_CORE_READ(prog, aux);
	__u64 key = (__u64)aux;
	__u32 maybe = 0;
	struct pending_load *ts = NULL;
	bool recorded = false;

	/*
	 * 6.1: lsm/bpf_prog_alloc_security made this load's record, zeroed but for the loader (record_loader, in
	 * this same task) and the unscanned state, and nothing else has read it (the program has no id yet): the
	 * scan fills it in place.
	 */
	if (gate_fentry_scan) {
		ts = bpf_map_lookup_elem(&pending_loads, &key);
		if (ts && ts->state != GATE_LOAD_UNSCANNED)
			ts = NULL;
		recorded = ts != NULL;
	}
	if (!ts)
		ts = new_pending_load(key);
	if (!ts) {
		/* Fail closed: no room to record the load for its final decision. */
		deny_unrecorded_load(BPF_CORE_READ(prog, type), &v);
		*vp = v;
		return NULL;
	}
	struct facts *f = &ts->facts;
	struct scan_ctx *sc = &ts->scan;

	if (!recorded)
		record_loader(ts);
	f->prog_type = BPF_CORE_READ(prog, type);
	f->attach_type = BPF_CORE_READ(prog, expected_attach_type);
	f->insn_cnt = BPF_CORE_READ(prog, len);
	/* Attach type 0 (cgroup_inet_ingress) is only meaningful for cgroup_skb; elsewhere it means none. */
	f->has_attach_type = f->attach_type != 0 || f->prog_type == BPF_PROG_TYPE_CGROUP_SKB;

	/*
	 * The classes: scan prog->insnsi in chunks. The address comes from aux->prog through a probe read,
	 * so it is a scalar: the verifier refuses variable offsets on the trusted prog pointer.
	 */
	sc->insns = (__u64)BPF_CORE_READ(aux, prog) + bpf_core_field_offset(struct bpf_prog, insnsi);
	sc->len = f->insn_cnt < GATE_MAX_INSNS ? f->insn_cnt : GATE_MAX_INSNS;
	sc->prog_type = f->prog_type;
	sc->fd_array = fd_array;

	__u32 cpu = bpf_get_smp_processor_id();
	struct jump_targets *jt = bpf_map_lookup_elem(&jump_targets, &cpu);
	bool contended = true;

	if (jt) {
		jt->owner = key;
		scan_program(ts, jt);
		/* Another load on this CPU took the jump targets meanwhile: the tags may be wrong. */
		contended = *(volatile __u64 *)&jt->owner != key;
	}
	if (f->attach_type == BPF_MODIFY_RETURN)
		note(sc, BPFGATE_CLASS_OVERRIDE_RETURN, GATE_EV_INSN | 0);
	if (sc->scanned < f->insn_cnt) {
		/* Unread instructions could call anything. */
		v.flags |= GATE_F_TRUNCATED;
		note(sc, BPFGATE_CLASS_UNKNOWN, GATE_EV_INSN | (sc->scanned & GATE_EV_VALUE_MASK));
	}
	if (contended) {
		/* Count the three by their preconditions alone, as if every access were through an unknown register. */
		sc->flags |= SCAN_CONTENDED;
		sc->unknown_load = 1;
		sc->unknown_store = 1;
	}
	maybe_class(sc, &maybe, BPFGATE_CLASS_KERNEL_READ, sc->btf_load,
		    btf_typed(f->prog_type) || (sc->flags & SCAN_BTF_SOURCE) ? sc->unknown_load : 0);
	maybe_class(sc, &maybe, BPFGATE_CLASS_MAP_WRITE, sc->map_store,
		    sc->flags & SCAN_MAP_REF ? sc->unknown_store : 0);
	maybe_class(sc, &maybe, BPFGATE_CLASS_PACKET_WRITE, sc->packet_store,
		    packet_type(f->prog_type) ? sc->unknown_store : 0);
	f->classes = sc->classes | maybe;
	f->maybe_classes = maybe;

	/* The attach target, for programs that name it by BTF id at load time. */
	struct btf *btf = BPF_CORE_READ(aux, attach_btf);
	__u32 btf_id = BPF_CORE_READ(aux, attach_btf_id);

	if (btf && btf_id && btf_type_name(btf, btf_id, f->prog_type, f->attach_type, f->target) == 0) {
		f->has_target = true;
		v.flags |= GATE_F_TARGET;
		f->gate_hook = gate_hook_target(f->prog_type, f->attach_type, f->target);
	}

	gate_evaluate(f, &f->subject, &ts->cgroups, &v, NULL);
	if (kernel)
		v.flags |= GATE_F_KERNEL;

	struct gate_event *e = new_event(GATE_OP_PROG_LOAD, &f->subject, &v);

	if (e) {
		event_program(e, f, aux);
		e->attach_btf_id = btf_id;
		e->scanned = sc->scanned;
		e->scan_flags = (sc->flags & SCAN_CONTENDED ? GATE_SCAN_CONTENDED : 0) |
				(sc->flags & SCAN_NOT_EXECUTABLE ? GATE_SCAN_NOT_EXECUTABLE : 0) |
				(sc->flags & SCAN_FD_ARRAY_UNREAD ? GATE_SCAN_FD_ARRAY_UNREAD : 0);
		e->unknown_helper = sc->unknown_helper;
#pragma unroll
		for (int k = 0; k < GATE_CLASS_SLOTS; k++)
			e->evidence[k] = sc->evidence[k];
		bpf_ringbuf_submit(e, 0);
	}

	ts->load_decision = v.decision;
	ts->load_generation = v.generation;
	ts->state = (__sync_fetch_and_add(&gate_load_seq, 1) + 1) << 2 | GATE_LOAD_PENDING;
	*vp = v;
	return ts;
}

static __always_inline int gate_prog_load(struct bpf_prog *prog, union bpf_attr *attr, bool kernel)
{
	struct verdict v = {};
	__u64 key = (__u64)BPF_CORE_READ(prog, aux);
	struct pending_load *ts = gate_scan(prog, BPF_CORE_READ(attr, fd_array), kernel, &v);

	if (!ts)
		return -EPERM;
	/*
	 * Allowed so far: the map rules decide at lsm/bpf_prog, once the verifier has bound the maps. A denied
	 * load fails here (it never gets an id, so nothing else can reach it): its record goes now, after the
	 * event read its facts and scan from it.
	 */
	if (v.decision == GATE_VERDICT_DENY) {
		drop_pending_load(key);
		return -EPERM;
	}
	return 0;
}

/*
 * Two variants of one hook: the 6.16 kernel added `bool kernel` to bpf_prog_load (and to bpf and
 * bpf_map_create), which moves the previous LSM's return value one slot along the context. The
 * loader reads the hook's prototype from the running kernel's BTF and loads only the matching ones.
 */
SEC("lsm/bpf_prog_load")
int BPF_PROG(gate_prog_load_v3, struct bpf_prog *prog, union bpf_attr *attr, struct bpf_token *token, int ret)
{
	if (ret)
		return ret; /* an earlier LSM program already refused it */
	return gate_prog_load(prog, attr, false);
}

SEC("lsm/bpf_prog_load")
int BPF_PROG(gate_prog_load_v4, struct bpf_prog *prog, union bpf_attr *attr, struct bpf_token *token,
	     bool kernel, int ret)
{
	if (ret)
		return ret;
	return gate_prog_load(prog, attr, kernel);
}

/*
 * A refusal of an fd to a program the gate has no facts of: the event names it by id, type and name, and by its
 * loader when `ts` is the load's record.
 */
static __always_inline int refuse_prog(__u32 op, struct gate_subject *s, struct verdict *v,
				       struct bpf_prog *prog, struct bpf_prog_aux *aux, __u32 id,
				       const struct pending_load *ts)
{
	struct gate_event *e = new_event(op, s, v);

	if (e) {
		if (ts)
			event_loader(e, ts);
		e->object_id = id;
		e->prog_type = BPF_CORE_READ(prog, type);
		if (bpf_probe_read_kernel(e->name, sizeof(e->name), &aux->name))
			e->name[0] = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return -EPERM;
}

/*
 * An fd to a program the gate has no pending record of: the gate's own programs go to its daemon only; a
 * program another subject loaded is decided by gate_prog_open; a program loaded before the gate attached is not
 * judged.
 */
static __always_inline int gate_prog_unrecorded(struct bpf_prog *prog, struct bpf_prog_aux *aux)
{
	__u32 id = aux->id;
	__u64 key = (__u64)aux;
	struct gate_subject s = {};
	struct verdict v = {};
	/*
	 * A program this gate let load is none of its own (they load before it attaches), so a recorded one
	 * skips the gate_objects lookup: one hash lookup less on the common fd by id.
	 */
	struct facts *loaded;

	if (is_daemon())
		return 0;
	loaded = bpf_map_lookup_elem(&loaded_progs, &key);
	if (loaded)
		return gate_prog_open(aux, id, loaded);
	if (!gate_object(GATE_KIND_PROG, id))
		return 0; /* loaded before the gate attached: not judged */
	current_subject(&s);
	refuse_gate_object(&v);
	return refuse_prog(GATE_OP_PROG_OPEN, &s, &v, prog, aux, id, NULL);
}

/*
 * The verdict of a program whose record another call decided (or that this call's record went away under
 * it): a denied record refuses every fd; an allowed program's facts are in loaded_progs (written before
 * its record said allowed), and gate_prog_open judges this caller by them; no record at all is a program
 * being freed.
 */
static __always_inline int gate_prog_decided(struct bpf_prog_aux *aux)
{
	__u64 key = (__u64)aux;
	struct pending_load *ts = bpf_map_lookup_elem(&pending_loads, &key);

	if (ts && (ts->state & GATE_LOAD_STATE_MASK) == GATE_LOAD_DENIED)
		return -EPERM;
	struct facts *loaded = bpf_map_lookup_elem(&loaded_progs, &key);

	if (!loaded)
		return -EPERM;
	return gate_prog_open(aux, aux->id, loaded);
}

/*
 * 6.1: a load lsm/bpf_prog_alloc_security recorded that no scan at fentry/bpf_check completed (no room for the
 * record, or the scan did not run: the kernel skips a fentry program re-entered on its CPU, or the load entered
 * bpf_check before the scan was attached). Denied, by the loader's subject recorded at the allocation, unless
 * its policy does not enforce (then the record goes, and the program is not judged). The first call decides,
 * with a compare-and-swap as for a scanned load: it need not be the loader's own.
 */
static __always_inline int gate_prog_unscanned(struct bpf_prog *prog, struct bpf_prog_aux *aux,
					       struct pending_load *ts, __u64 state)
{
	__u64 key = (__u64)aux;
	struct gate_subject s = ts->facts.subject;
	struct rule_match rm = {};
	struct verdict v = {};
	bool judge = rule_for(&s, &ts->cgroups, &v, &rm, false);

	/* Not enforced for this subject: no policy, audit mode, or an audit rule. */
	if ((v.flags & (GATE_F_NO_POLICY | GATE_F_AUDIT_MODE)) ||
	    (judge && rm.r->action == GATE_ACTION_AUDIT)) {
		drop_pending_load(key);
		return 0;
	}
	if (__sync_val_compare_and_swap(&ts->state, state, GATE_LOAD_DENIED) != state)
		return gate_prog_decided(aux);
	v.decision = GATE_VERDICT_DENY;
	v.rule = GATE_RULE_DEFAULT;
	v.reasons = 0;
	return refuse_prog(GATE_OP_PROG_LOAD, &s, &v, prog, aux, BPF_CORE_READ(aux, id), ts);
}

/*
 * lsm/bpf_prog: an fd to a program is about to be made: right after a load's verification
 * (bpf_prog_new_fd, after the program got its id), or by id (BPF_PROG_GET_FD_BY_ID) or pin. The first
 * call for a pending record is the load's final decision, with the maps the verifier bound, by the
 * subject the scan recorded: that first call need not be the loader's own (another thread can open the
 * new id meanwhile). The verdict is stored with one compare-and-swap on the record's state word, so
 * concurrent first calls agree: a denied record refuses every fd (the load fails with EPERM and the
 * kernel frees the program), an allowed one sends callers other than the loader to gate_prog_open.
 */
SEC("lsm/bpf_prog")
int BPF_PROG(gate_prog_fd, struct bpf_prog *prog, int ret)
{
	/* Read through the hook's BTF pointer, not a probe read: this runs on every fd by id too. */
	struct bpf_prog_aux *aux = prog->aux;
	__u64 key = (__u64)aux;
	struct pending_load *ts;
	struct verdict v = {};

	if (ret)
		return ret;
	ts = *(volatile __s64 *)&pending_records ? bpf_map_lookup_elem(&pending_loads, &key) : NULL;
	if (!ts)
		return gate_prog_unrecorded(prog, aux);
	__u64 state = *(volatile __u64 *)&ts->state;

	if ((state & GATE_LOAD_STATE_MASK) == GATE_LOAD_UNSCANNED)
		return gate_prog_unscanned(prog, aux, ts, state);
	if ((state & GATE_LOAD_STATE_MASK) != GATE_LOAD_PENDING)
		return gate_prog_decided(aux);
	struct used_maps *um = &ts->used;
	struct gather_ctx g = {
		.used = BPF_CORE_READ(aux, used_maps),
		.um = um,
		.subject = &ts->facts.subject,
	};
	__u32 cnt = BPF_CORE_READ(aux, used_map_cnt);

	if (g.used)
		bpf_loop(cnt < GATE_MAX_USED_MAPS ? cnt : GATE_MAX_USED_MAPS, gather_map, &g, 0);
	if (cnt > GATE_MAX_USED_MAPS) {
		/* The kernel allows 64: cannot happen. */
		g.unattributed = true;
		g.kptr = true;
	}
	um->count = g.count;
	um->unattributed = g.unattributed;
	um->kptr = g.kptr;
	bool btfs_changed = kfunc_btfs_changed(ts, aux);
	/*
	 * A load through an unknown register reads kernel memory where a used map may hold kptrs: known only now
	 * that the verifier bound the maps (the scan counted it already in a BTF-typed program or with a BTF source).
	 */
	bool kptr_read = g.kptr && ts->scan.unknown_load && !(ts->facts.classes & BPFGATE_CLASS_KERNEL_READ);

	if (kptr_read) {
		ts->facts.classes |= BPFGATE_CLASS_KERNEL_READ;
		ts->facts.maybe_classes |= BPFGATE_CLASS_KERNEL_READ;
	}

	if (btfs_changed) {
		/* The scan judged other kfuncs than the program calls: unknown, and the three it could miss. */
		__u32 three =
			BPFGATE_CLASS_KERNEL_READ | BPFGATE_CLASS_MAP_WRITE | BPFGATE_CLASS_PACKET_WRITE;

		ts->facts.classes |= BPFGATE_CLASS_UNKNOWN | three;
		ts->facts.maybe_classes |= three;
	}
	gate_evaluate(&ts->facts, &ts->facts.subject, &ts->cgroups, &v, um);
	/*
	 * Fail closed under an enforced policy: a program without a record could be handed to any
	 * subject (gate_prog_open). The record goes in before the verdict is published, so whoever
	 * reads "allowed" finds it.
	 */
	if (v.decision != GATE_VERDICT_DENY &&
	    bpf_map_update_elem(&loaded_progs, &key, &ts->facts, BPF_ANY) &&
	    !(v.flags & (GATE_F_NO_POLICY | GATE_F_AUDIT_MODE))) {
		v.decision = GATE_VERDICT_DENY;
		v.rule = GATE_RULE_DEFAULT;
		v.reasons = 0;
	}
	bool deny = v.decision == GATE_VERDICT_DENY;
	__u64 decided = (state & ~GATE_LOAD_STATE_MASK) | (deny ? GATE_LOAD_DENIED : GATE_LOAD_ALLOWED);

	if (__sync_val_compare_and_swap(&ts->state, state, decided) != state)
		return gate_prog_decided(aux); /* another call decided first: its verdict stands */

	/*
	 * The whole decision is taken again here, under the policy in force now: if a reload happened
	 * while the verifier ran, this one generation decides the load. An event when that generation
	 * differs, the outcome changed, or a map broke a rule; the load event stands otherwise.
	 */
	if ((v.reasons & GATE_R_MAP) || v.decision != ts->load_decision ||
	    v.generation != ts->load_generation || btfs_changed || kptr_read) {
		struct gate_event *e = new_event(GATE_OP_PROG_MAPS, &ts->facts.subject, &v);

		if (e) {
			event_program(e, &ts->facts, aux);
			e->object_id = BPF_CORE_READ(aux, id);
			e->scan_flags = (btfs_changed ? GATE_SCAN_KFUNC_BTF_CHANGED : 0) |
					(kptr_read ? GATE_SCAN_KPTR_READ : 0);
			event_loader(e, ts);
			if (v.bad_map > 0 && v.bad_map <= GATE_MAX_USED_MAPS)
				__builtin_memcpy(e->map_name,
						 um->maps[(v.bad_map - 1) & (GATE_MAX_USED_MAPS - 1)].name,
						 sizeof(e->map_name));
			bpf_ringbuf_submit(e, 0);
		}
	}
	gate_count_decision(GATE_OP_PROG_MAPS, &v); /* the load's final decision */
	/* A denied record stays until the program is freed (lsm/bpf_prog_free), refusing every fd meanwhile. */
	if (deny)
		return -EPERM;
	drop_pending_load(key);
	/* This call may be another subject's open by id, racing the loader's own: judged as any open. */
	struct facts *loaded = bpf_map_lookup_elem(&loaded_progs, &key);

	return loaded ? gate_prog_open(aux, aux->id, loaded) : 0;
}

/*
 * A program goes away: its record of a load (gate_prog_open) with it, and the pending record of a
 * load the verifier refused, which never reaches lsm/bpf_prog.
 */
static __always_inline int gate_prog_freed(struct bpf_prog_aux *aux)
{
	__u64 key = (__u64)aux;

	drop_pending_load(key);
	bpf_map_delete_elem(&loaded_progs, &key);
	return 0;
}

SEC("lsm/bpf_prog_free")
int BPF_PROG(gate_prog_free, struct bpf_prog *prog)
{
	return gate_prog_freed(BPF_CORE_READ(prog, aux));
}

/* The creator of a map becomes its owner. */
static __always_inline int gate_map_create(struct bpf_map *map)
{
	struct gate_map_owner o = { .flags = GATE_OWNER_KNOWN };
	struct verdict v = { .rule = GATE_RULE_DEFAULT };
	__u64 key = (__u64)map;

	current_subject(&o.subject);
	/* Fail closed: an unrecorded map would be nobody's, and writable by nobody's rules. */
	if (bpf_map_update_elem(&map_owners, &key, &o, BPF_ANY)) {
		v.decision = GATE_VERDICT_DENY;
		count_drop();
		return -EPERM;
	}
	v.decision = GATE_VERDICT_ALLOW;
	struct gate_event *e = new_event(GATE_OP_MAP_CREATE, &o.subject, &v);

	if (e) {
		BPF_CORE_READ_STR_INTO(&e->name, map, name);
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("lsm/bpf_map_create")
int BPF_PROG(gate_map_create_v3, struct bpf_map *map, union bpf_attr *attr, struct bpf_token *token, int ret)
{
	if (ret)
		return ret;
	return gate_map_create(map);
}

SEC("lsm/bpf_map_create")
int BPF_PROG(gate_map_create_v4, struct bpf_map *map, union bpf_attr *attr, struct bpf_token *token,
	     bool kernel, int ret)
{
	if (ret)
		return ret;
	return gate_map_create(map);
}

/* A map goes away: its owner with it. */
static __always_inline int gate_map_freed(struct bpf_map *map)
{
	__u64 key = (__u64)map;

	bpf_map_delete_elem(&map_owners, &key);
	return 0;
}

SEC("lsm/bpf_map_free")
int BPF_PROG(gate_map_free, struct bpf_map *map)
{
	return gate_map_freed(map);
}

/*
 * lsm/bpf_map: an fd to a map is about to be made (creation, BPF_MAP_GET_FD_BY_ID, a pin). A
 * writable fd to another subject's map needs a rule that lets the subject write it; the gate's own
 * maps are writable by its daemon only.
 */
SEC("lsm/bpf_map")
int BPF_PROG(gate_map_fd, struct bpf_map *map, unsigned int fmode, int ret)
{
	struct gate_subject s = {};
	struct verdict v = { .rule = GATE_RULE_DEFAULT };
	__u32 *cmd = NULL;
	__u32 id;
	__u64 key = (__u64)map;
	struct used_map m = {};

	if (ret)
		return ret;
	id = map->id;
	if (*(volatile __s64 *)&obj_gets_in_flight) {
		__u64 tid = bpf_get_current_pid_tgid();

		cmd = bpf_map_lookup_elem(&thread_cmds, &tid);
	}
	if (cmd && *cmd == BPF_OBJ_GET) {
		/* Reached through a pin: shared, whoever created it. */
		struct gate_map_owner *o = bpf_map_lookup_elem(&map_owners, &key);

		if (o) {
			o->flags |= GATE_OWNER_PINNED; /* the only bit ever set after creation */
		} else {
			struct gate_map_owner fresh = { .flags = GATE_OWNER_PINNED };

			bpf_map_update_elem(&map_owners, &key, &fresh, BPF_NOEXIST);
		}
	}
	if (!(fmode & FMODE_WRITE))
		return 0;
	current_subject(&s);
	/*
	 * The common case first, before the gate_objects lookup: a loader's own map. None of the gate's own maps has
	 * a known owner in its map_owners: they are created before its hooks attach (lsm/bpf_map_create records
	 * the maps created after), and a pin marks a record pinned, never known.
	 */
	map_facts(map, &s, &m.own, &m.pinned);
	if (m.own && !m.pinned)
		return 0;
	if (gate_object(GATE_KIND_MAP, id)) {
		if (is_daemon())
			return 0;
		refuse_gate_object(&v);
	} else {
		BPF_CORE_READ_STR_INTO(&m.name, map, name);

		/* The subject's rule decides as for a program that writes this map. */
		struct rule_match rm = {};

		if (rule_for(&s, NULL, &v, &rm, false)) {
			bool ok = map_write_ok(rm.r, rm.slot, &m);

			finish(&v,
			       rm.r->action == GATE_ACTION_AUDIT ? GATE_VERDICT_AUDIT
			       : ok				 ? GATE_VERDICT_ALLOW
								 : GATE_VERDICT_DENY,
			       rm.id, ok ? 0 : GATE_R_MAP, v.flags & GATE_F_AUDIT_MODE);
		}
		if (m.pinned)
			v.flags |= GATE_F_PINNED;
	}
	struct gate_event *e = new_event(GATE_OP_MAP_OPEN, &s, &v);

	if (e) {
		e->object_id = id;
		e->fmode = fmode;
		BPF_CORE_READ_STR_INTO(&e->name, map, name);
		bpf_ringbuf_submit(e, 0);
	}
	return v.decision == GATE_VERDICT_DENY ? -EPERM : 0;
}

/*
 * lsm/bpf, the link guard: refuses BPF_LINK_GET_FD_BY_ID of the gate's own links to anyone but its daemon. The
 * loader attaches it only where an fd to a tracing link could detach it or replace its program (or when asked
 * to, `enforce --guard-links`): it runs on every bpf() call, every map lookup an agent makes from user space
 * included, and on kernels whose tracing links have neither operation a link fd grants nothing but the link's
 * information and the power to keep it attached (gate-bpf/README.md, "The hot path").
 */
static __always_inline int gate_bpf_cmd(int cmd, union bpf_attr *attr)
{
	if (cmd != BPF_LINK_GET_FD_BY_ID || is_daemon())
		return 0;
	__u32 link_id = 0;

	/* attr is the kernel's copy; link_id is its first word for this command. */
	if (bpf_probe_read_kernel(&link_id, sizeof(link_id), attr) || !gate_object(GATE_KIND_LINK, link_id))
		return 0;
	struct gate_subject s = {};
	struct verdict v = {};

	current_subject(&s);
	refuse_gate_object(&v);
	struct gate_event *e = new_event(GATE_OP_LINK_OPEN, &s, &v);

	if (e) {
		e->object_id = link_id;
		bpf_ringbuf_submit(e, 0);
	}
	return -EPERM;
}

/*
 * BPF_OBJ_GET: the thread is noted from the entry of bpf_obj_get_user to its exit, so lsm/bpf_map (called
 * in between, when the pin is a map's) marks the map pinned. The exit link is attached before the entry's,
 * and both programs sit in the one trampoline of the function, so a call that ran the entry runs the exit:
 * no note outlives its call (a stale one would mark a map opened later by id as pinned).
 */
SEC("fentry/bpf_obj_get_user")
int BPF_PROG(gate_obj_get_enter)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 c = BPF_OBJ_GET;

	if (!bpf_map_update_elem(&thread_cmds, &tid, &c, BPF_ANY))
		__sync_fetch_and_add(&obj_gets_in_flight, 1);
	return 0;
}

SEC("fexit/bpf_obj_get_user")
int BPF_PROG(gate_obj_get_exit)
{
	__u64 tid = bpf_get_current_pid_tgid();

	/* Only a note this call made is counted down: an exit whose entry did not run must not lower the count. */
	if (!bpf_map_delete_elem(&thread_cmds, &tid))
		__sync_fetch_and_add(&obj_gets_in_flight, -1);
	return 0;
}

SEC("lsm/bpf")
int BPF_PROG(gate_bpf_v3, int cmd, union bpf_attr *attr, unsigned int size, int ret)
{
	if (ret)
		return ret;
	return gate_bpf_cmd(cmd, attr);
}

SEC("lsm/bpf")
int BPF_PROG(gate_bpf_v4, int cmd, union bpf_attr *attr, unsigned int size, bool kernel, int ret)
{
	if (ret)
		return ret;
	return gate_bpf_cmd(cmd, attr);
}

/* The hooks of kernels without security_bpf_prog_load (6.1): they use gate_scan and gate_map_create above. */
#include "legacy.bpf.h"
