/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Ownership: who created each map (and whether it was reached through a pin), the maps a program uses as
 * the map rules see them, and who loaded each program, so that another subject gets an fd to it only if its
 * own rule would let it load that program.
 */
#ifndef BPFGATE_OWNERS_BPF_H
#define BPFGATE_OWNERS_BPF_H

/*
 * Map ownership, keyed by the kernel's struct bpf_map address: recorded at lsm/bpf_map_create,
 * dropped at lsm/bpf_map_free (so an address is never reused with a stale owner). Maps created
 * before the gate started have no record: they are nobody's own.
 */
#define GATE_MAX_MAP_OWNERS (1U << 16)
#define GATE_OWNER_KNOWN (1U << 0) /* created while the gate was attached; subject fields valid */
#define GATE_OWNER_PINNED (1U << 1) /* opened through a pin (BPF_OBJ_GET) at least once */

struct gate_map_owner {
	struct gate_subject subject;
	__u32 flags; /* GATE_OWNER_* */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_MAP_OWNERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct gate_map_owner);
} map_owners SEC(".maps");

/*
 * Threads inside BPF_OBJ_GET (bpf_obj_get_user), noted from its entry to its exit (fentry/fexit below) for
 * lsm/bpf_map, which runs in between when the pin is a map's: a map reached through a pin is marked pinned.
 * LRU: an evicted entry only loses a pinned mark. obj_gets_in_flight counts the notes, so lsm/bpf_map looks the
 * thread up only while there is one: raised after a note is made, lowered only after the exit deleted a note, so
 * it is never below the number of notes (an exit whose entry did not run, while the links attach, deletes nothing
 * and lowers nothing); an evicted or replaced note can only leave it higher, which costs lookups, not marks.
 */
__s64 obj_gets_in_flight = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} thread_cmds SEC(".maps");

/* Who owns a map, as the map rules see it: own (same subject as `s`) and pinned. */
static __always_inline void map_facts(struct bpf_map *map, const struct gate_subject *s, __u8 *own,
				      __u8 *pinned)
{
	__u64 key = (__u64)map;
	struct gate_map_owner *o = bpf_map_lookup_elem(&map_owners, &key);

	*own = o && (o->flags & GATE_OWNER_KNOWN) && same_subject(&o->subject, s);
	*pinned = o && (o->flags & GATE_OWNER_PINNED);
}

/* Whether a map's value has kptr fields (map->record, which the kernel built from the value's BTF; on 6.1
 * map->kptr_off_tab). */
static __always_inline bool map_holds_kptr(struct bpf_map *map)
{
	__u32 kptrs = 0;

	if (!bpf_core_field_exists(struct bpf_map, record)) {
		/* 6.1: kptr_off_tab, set when the value has kptr fields. Neither field: take it as holding some. */
		if (bpf_core_field_exists(struct bpf_map___v61, kptr_off_tab))
			return BPF_CORE_READ((struct bpf_map___v61 *)map, kptr_off_tab) != NULL;
		return true;
	}
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_UNREF))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_UNREF);
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_REF))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_REF);
	if (bpf_core_enum_value_exists(enum btf_field_type, BPF_KPTR_PERCPU))
		kptrs |= bpf_core_enum_value(enum btf_field_type, BPF_KPTR_PERCPU);
	return BPF_CORE_READ(map, record, field_mask) & kptrs;
}

/*
 * What gather_map collects. The counts and flags are the caller's (on its stack) and written to `um` once
 * at the end: concurrent first lsm/bpf_prog calls for one program gather into the same record, and each
 * writes the same values to the same slots (the maps the verifier bound do not change), never a reset.
 */
struct gather_ctx {
	struct bpf_map **used;
	struct used_maps *um;
	const struct gate_subject *subject;
	__u32 count;
	bool unattributed;
	bool kptr;
};

static long gather_map(__u64 i, void *data)
{
	struct gather_ctx *g = data;
	struct bpf_map *map = NULL;
	struct used_maps *um = g->um;

	if (bpf_probe_read_kernel(&map, sizeof(map), &g->used[i]) || !map)
		return 0;
	enum bpf_map_type type = BPF_CORE_READ(map, map_type);

	if (type == BPF_MAP_TYPE_ARRAY_OF_MAPS || type == BPF_MAP_TYPE_HASH_OF_MAPS) {
		g->unattributed = true; /* programs write the inner maps, which used_maps does not list */
		g->kptr = true; /* and their values may hold kptrs */
		return 0;
	}
	g->kptr |= map_holds_kptr(map);
	if (BPF_CORE_READ(map, map_flags) & BPF_F_RDONLY_PROG)
		return 0; /* programs cannot write it (.rodata, .kconfig) */
	__u32 n = g->count;

	if (n >= GATE_MAX_USED_MAPS)
		return 1;
	struct used_map *m = &um->maps[n];

	m->id = BPF_CORE_READ(map, id);
	BPF_CORE_READ_STR_INTO(&m->name, map, name);
	map_facts(map, g->subject, &m->own, &m->pinned);
	g->count = n + 1;
	return 0;
}

/*
 * Programs loaded while the gate was attached, by bpf_prog_aux address: what their load was judged by
 * and who loaded them (gate_prog_open). When full, loads under an enforced policy are denied.
 */
#define GATE_MAX_PROGS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GATE_MAX_PROGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct facts);
} loaded_progs SEC(".maps");

/*
 * BPF_PROG_GET_FD_BY_ID or a pin opens a program the gate let load: another subject gets the fd only
 * if its own rule would let it load that program (map rules aside: taking an fd writes no map).
 * Otherwise a program it may not load would still be in its hands, to attach, to run, or to reach by
 * a tail call from a prog array of its own. `loaded` is the program's record (programs loaded before the gate
 * attached have none and are not judged).
 */
static __always_inline int gate_prog_open(struct bpf_prog_aux *aux, __u32 id, struct facts *loaded)
{
	struct gate_subject s = {};
	struct verdict v = {};

	current_subject(&s);
	if (same_subject(&s, &loaded->subject))
		return 0;
	gate_evaluate(loaded, &s, NULL, &v, NULL);
	struct gate_event *e = new_event(GATE_OP_PROG_OPEN, &s, &v);

	if (e) {
		event_program(e, loaded, aux);
		e->object_id = id;
		bpf_ringbuf_submit(e, 0);
	}
	return v.decision == GATE_VERDICT_DENY ? -EPERM : 0;
}

#endif /* BPFGATE_OWNERS_BPF_H */
