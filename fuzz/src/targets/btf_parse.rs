//! `btf_parse`: arbitrary bytes as a `.BTF` section, through `bpfgate::unstable::btf::parse` in both byte orders.
//!
//! Properties:
//! * `parse` never panics (nor hangs) in either byte order, and is deterministic;
//! * on what parses: `btf_map_defs()` never panics, and neither do the lookups the ELF front end and analysis
//!   use (`types`, `type_by_id`, `type_name`, `resolve`, `size_of`, `datasec`) on every type id, id 0 and the
//!   id past the last;
//! * `types()` yields ids `1..=type_count()` in order, each equal to `type_by_id(id)`; `resolve` of any id gives
//!   `None`, 0, or an id that exists;
//! * every BTF map definition names a member of the `.maps` DATASEC.

/// The properties in one byte order.
fn check_order(data: &[u8], little_endian: bool) {
    let Ok(btf) = bpfgate::unstable::btf::parse(data, little_endian) else { return };
    assert_eq!(bpfgate::unstable::btf::parse(data, little_endian).as_ref(), Ok(&btf), "parse is not deterministic");
    let count = btf.type_count();
    let mut expect = 1u32;
    for (id, t) in btf.types() {
        assert_eq!(id, expect, "types() skipped an id");
        expect += 1;
        assert_eq!(btf.type_by_id(id), Some(t));
    }
    assert_eq!(expect - 1, count, "types() and type_count() disagree");
    assert!(btf.type_by_id(0).is_none());
    assert!(btf.type_by_id(count.saturating_add(1)).is_none() || count == u32::MAX);
    for id in 0..=count.saturating_add(1).min(100_000) {
        let _ = btf.type_name(id);
        let _ = btf.size_of(id);
        if let Some(r) = btf.resolve(id) {
            assert!(r == 0 || btf.type_by_id(r).is_some(), "resolve({id}) gave missing type {r}");
        }
    }
    for name in [".maps", ".kconfig", ".data", ".rodata", ".bss", ".ksyms"] {
        let _ = btf.datasec(name);
    }
    if let Ok(defs) = btf.btf_map_defs() {
        let vars = btf.datasec(".maps").unwrap_or_default();
        for d in &defs {
            assert!(vars.iter().any(|v| v.name == d.name), "map {} is not in the .maps DATASEC", d.name);
        }
    }
}

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    check_order(data, true);
    check_order(data, false);
}
