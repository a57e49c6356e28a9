//! Objects built the way each loader's convention has them (issue 18), by the test support's ELF writer: iproute2
//! maps with pinning and map-in-map, reached from `.text`; static programs; NOTYPE function symbols of LLVM
//! before 8; unreached code; load overrides. Each report is compared with a golden file in `tests/loaders/`
//! (`BLESS=1` rewrites them) after the assertions that matter.

use bpfgate::metadata::MapKind;
use bpfgate::{inspect, inspect_with, InspectErrorKind, LoadOverride, Loader, ObjectReport, ProgType};
use bpfgate_test_support::elf::{
    Elf, R_BPF_64_32, R_BPF_64_64, SHT_PROGBITS, STB_GLOBAL, STT_FUNC, STT_NOTYPE, STT_OBJECT,
};
use bpfgate_test_support::insn::{call_helper, call_local, exit, ld_imm64, mov, mov_imm, op, st_imm, Insn};

use crate::support::repo;

const STB_LOCAL: u8 = 0;
const MAP_TYPE_HASH: u32 = 1;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_PROG_ARRAY: u32 = 3;
const MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Compares `report` with `tests/loaders/NAME.json`.
fn golden(name: &str, report: &ObjectReport) {
    let path = repo().join("tests/loaders").join(format!("{name}.json"));
    let json = serde_json::to_string_pretty(report).expect("serializes") + "\n";
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, &json).expect("golden written");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(want == json, "{name}: report differs from {} (BLESS=1 to update):\n{json}", path.display());
}

/// `struct bpf_elf_map` words: type, size_key, size_value, max_elem, flags, id, pinning[, inner_id, inner_idx].
fn elf_maps(defs: &[&[u32]]) -> Vec<u8> {
    defs.iter().flat_map(|d| d.iter().flat_map(|w| w.to_le_bytes())).collect()
}

/// r0 = 0; exit.
const RET0: [Insn; 2] = [mov_imm(0, 0), exit()];

/// r1 = (relocated map); *(u32 *)(r10 - 4) = 0; r2 = r10 - 4; r0 = map_lookup_elem(r1, r2); r0 = 0; exit.
fn lookup() -> Vec<Insn> {
    let mut code = ld_imm64(1, 0, 0).to_vec();
    code.extend([st_imm(op::W, 10, -4, 0), mov(2, 10), bpfgate_test_support::insn::add_imm(2, -4), call_helper(1)]);
    code.extend(RET0);
    code
}

/// iproute2's conventions: `struct bpf_elf_map` of 36 bytes with every pinning mode, a map of maps whose inner
/// template is named by `inner_id` and placed by `inner_idx`, and a `classifier` program that reaches the map of
/// maps through a `.text` function (a code relocation from `.text` to a legacy map definition).
fn iproute2_object(map_len: usize) -> Vec<u8> {
    let mut e = Elf::new();
    e.license();
    let full = |d: [u32; 9]| d[..map_len / 4].to_vec();
    let defs = [
        full([MAP_TYPE_PROG_ARRAY, 4, 4, 4, 0, 1, 2, 0, 0]), // jmp_map, PIN_GLOBAL_NS
        full([MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 2, 0, 2, 1, 3, 0]), // outer, PIN_OBJECT_NS, inner_id 3
        full([MAP_TYPE_ARRAY, 4, 8, 1, 0, 3, 0, 0, 0]),      // inner, id 3, at slot 0 of outer
        full([MAP_TYPE_HASH, 4, 8, 16, 0, 0, 3, 0, u32::MAX]), // counters, custom pinning 3
    ];
    let defs: Vec<&[u32]> = defs.iter().map(Vec::as_slice).collect();
    let maps = e.section("maps", SHT_PROGBITS, 3, elf_maps(&defs));
    for (i, name) in ["jmp_map", "outer", "inner", "counters"].into_iter().enumerate() {
        e.symbol(name, STB_GLOBAL | STT_OBJECT, maps, (i * map_len) as u64, map_len as u64);
    }
    let text = e.code(".text", &lookup());
    let sub = e.func("lookup_outer", text, 0, lookup().len());
    let mut main = vec![mov(6, 1), call_local(-1)];
    main.extend(RET0);
    let cls = e.code("classifier", &main);
    e.func("cls_main", cls, 0, main.len());
    e.rel(cls, [(8, sub, R_BPF_64_32)]);
    // Symbol 2 is `outer` (1 is jmp_map): the .text ld_imm64 at insn 0 refers to it.
    e.rel(text, [(0, 2, R_BPF_64_64)]);
    e.finish()
}

#[test]
fn iproute2_maps_pinning_map_in_map_and_text_relocations() {
    for map_len in [36, 28] {
        let report = inspect("iproute2.o", &iproute2_object(map_len));
        assert!(report.errors.is_empty(), "{map_len}: {:?}", report.errors);
        let pins: Vec<(&str, MapKind, u32, Option<u32>)> =
            report.maps.iter().map(|m| (m.name.as_str(), m.kind, m.pinning, m.id)).collect();
        assert_eq!(
            pins,
            [
                ("jmp_map", MapKind::Iproute2, 1, Some(1)),
                ("outer", MapKind::Iproute2, 2, Some(2)),
                ("inner", MapKind::Iproute2, 0, Some(3)),
                ("counters", MapKind::Iproute2, 3, None),
            ],
            "{map_len}"
        );
        let outer = &report.maps[1];
        let inner = &report.maps[2];
        if map_len == 36 {
            assert_eq!(outer.inner_map.as_deref(), Some("inner"));
            assert_eq!(inner.inner_idx, Some(0));
        } else {
            // The 28-byte layout predates map-in-map: tc reads inner_id and inner_idx as zero.
            assert_eq!((outer.inner_map.as_deref(), inner.inner_idx), (None, None));
        }
        let [p] = report.programs.as_slice() else { panic!("{:?}", report.programs) };
        assert_eq!(p.name, "cls_main");
        assert_eq!(p.prog_type, ProgType::SchedCls);
        assert_eq!(p.loaders, [Loader::CiliumEbpf, Loader::Iproute2, Loader::Aya], "libbpf 1.x refuses `maps`");
        assert_eq!(p.subprograms.len(), 1);
        assert!(p.maps.iter().any(|m| m.name == "outer" && m.read), "{:?}", p.maps);
        assert!(report.notes.iter().any(|n| n.starts_with("libbpf 1.x refuses this object")), "{:?}", report.notes);
        golden(&format!("iproute2_maps_{map_len}"), &report);
    }
}

/// cilium/ebpf loads every function symbol of a program section, static ones included; libbpf refuses the object.
#[test]
fn static_functions_of_a_program_section_are_programs() {
    let mut e = Elf::new();
    e.license();
    let code: Vec<Insn> = [RET0, RET0, RET0].concat();
    let s = e.code("classifier", &code);
    e.func("entry", s, 0, 2);
    e.symbol("tail_a", STB_LOCAL | STT_FUNC, s, 16, 16);
    e.symbol("tail_b", STB_LOCAL | STT_FUNC, s, 32, 16);
    let report = inspect("static.o", &e.finish());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let progs: Vec<(&str, u32, &[Loader])> =
        report.programs.iter().map(|p| (p.name.as_str(), p.section_offset, p.loaders.as_slice())).collect();
    assert_eq!(
        progs,
        [
            ("entry", 0, &[Loader::CiliumEbpf, Loader::Iproute2, Loader::Aya][..]),
            ("tail_a", 2, &[Loader::CiliumEbpf, Loader::Aya][..]),
            ("tail_b", 4, &[Loader::CiliumEbpf, Loader::Aya][..]),
        ]
    );
    assert!(
        report.notes.iter().any(|n| n.contains("program tail_a in section classifier is static")),
        "{:?}",
        report.notes
    );
    assert!(report.unreached.is_empty(), "{:?}", report.unreached);
    golden("static_programs", &report);
}

/// LLVM before 8 wrote functions as GLOBAL NOTYPE symbols of size 0: loaders name programs after them, and a call
/// from one `.text` function to another at offset 0 is no recursion.
#[test]
fn notype_symbols_name_programs_and_bound_functions() {
    let mut e = Elf::new();
    e.license();
    // .text: f2 at 0 (r0 = 0; exit), f at 2 (call f2; exit).
    let text = e.code(".text", &[RET0[0], RET0[1], call_local(-3), exit()]);
    e.symbol("f2", STB_GLOBAL | STT_NOTYPE, text, 0, 0);
    let f = e.symbol("f", STB_GLOBAL | STT_NOTYPE, text, 16, 0);
    let main = [call_local(-1), exit()];
    let x = e.code("xdp", &main);
    e.symbol("xdp_program_with_a_long_name", STB_GLOBAL | STT_NOTYPE, x, 0, 0);
    // A local NOTYPE symbol is a jump label, not a function.
    e.symbol("LBB0_1", STB_LOCAL | STT_NOTYPE, x, 8, 0);
    e.rel(x, [(0, f, R_BPF_64_32)]);
    let report = inspect("clang7.o", &e.finish());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [p] = report.programs.as_slice() else { panic!("{:?}", report.programs) };
    assert_eq!((p.name.as_str(), p.kernel_name.as_str()), ("xdp_program_with_a_long_name", "xdp_program_wit"));
    assert_eq!(p.loaders, [Loader::CiliumEbpf, Loader::Iproute2], "libbpf and aya take FUNC symbols only");
    let subs: Vec<&str> = p.subprograms.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subs, ["f", "f2"]);
    golden("notype_symbols", &report);
}

/// Nothing is dropped silently: code no program reaches is listed with its symbol; a section without function
/// symbols is the program iproute2 loads, unnamed.
#[test]
fn unreached_code_and_symbolless_sections_are_reported() {
    let mut e = Elf::new();
    e.license();
    let text = e.code(".text", &[RET0, RET0].concat());
    e.func("used", text, 0, 2);
    e.symbol("unused", STB_LOCAL | STT_FUNC, text, 16, 16);
    e.symbol("used_ref", STB_GLOBAL | STT_NOTYPE, text, 0, 0);
    let main = [call_local(-1), exit()];
    let k = e.code("kprobe/do_nanosleep", &main);
    e.func("probe", k, 0, 2);
    e.rel(k, [(0, 1, R_BPF_64_32)]);
    e.code("socket1", &RET0);
    let report = inspect("unreached.o", &e.finish());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let unreached: Vec<(&str, u32, u32, Option<&str>)> =
        report.unreached.iter().map(|u| (u.section.as_str(), u.start, u.end, u.symbol.as_deref())).collect();
    assert_eq!(unreached, [(".text", 2, 4, Some("unused"))]);
    let sock = report.programs.iter().find(|p| p.section == "socket1").expect("socket1 reported");
    assert_eq!((sock.kernel_name.as_str(), sock.loaders.as_slice()), ("", &[Loader::Iproute2][..]));
    assert!(report.notes.iter().any(|n| n.contains("used_ref is another name of function used")), "{:?}", report.notes);
    golden("unreached", &report);
}

/// bcc's placeholders: `kprobe/dummy_kprobe` is attached where the loader says at run time.
#[test]
fn load_overrides_set_what_the_loader_sets() {
    let (e, _) = Elf::program("kprobe/dummy_kprobe", "dummy_kprobe_with_long_name", &RET0, 2);
    let bytes = e.finish();
    let plain = inspect("dummy.o", &bytes);
    assert_eq!(plain.programs[0].attach_target.as_deref(), Some("dummy_kprobe"));
    let target = LoadOverride {
        // By the kernel's name, as a gate event shows it.
        program: "dummy_kprobe_wi".into(),
        attach_target: Some("vfs_read".into()),
        ..LoadOverride::default()
    };
    let typed = LoadOverride {
        program: "dummy_kprobe_with_long_name".into(),
        prog_type: Some(ProgType::Tracing),
        ..LoadOverride::default()
    };
    let report = inspect_with(
        "dummy.o",
        &bytes,
        &bpfgate::InspectOptions { overrides: vec![target, typed], ..Default::default() },
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let p = &report.programs[0];
    assert_eq!((p.attach_target.as_deref(), p.prog_type), (Some("vfs_read"), ProgType::Tracing));
    assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
    assert_eq!(p.notes[0], "attach target set by the loader: vfs_read (the section says dummy_kprobe)");
    let missing = LoadOverride { program: "nope".into(), attach_target: Some("x".into()), ..LoadOverride::default() };
    let report =
        inspect_with("dummy.o", &bytes, &bpfgate::InspectOptions { overrides: vec![missing], ..Default::default() });
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].kind, InspectErrorKind::Override);
    assert_eq!(report.programs.len(), 1, "the programs are still analyzed");
}

/// An LSM program declared `void` (its hook returns nothing) need not set r0; one declared `int` must. Only the
/// programs' own entry functions are looked up, among many FUNCs (a GCC object declares every kernel function
/// it names), some of them `void` and sharing a first letter with a program.
#[test]
fn lsm_programs_declared_void_need_no_r0() {
    use bpfgate_test_support::btf::{Btf, KIND_FUNC, KIND_FUNC_PROTO};
    let mut b = Btf::new();
    let int = b.int("int", 4, 1);
    let void_proto = b.add("", KIND_FUNC_PROTO, 0, false, 0, &[]);
    let int_proto = b.add("", KIND_FUNC_PROTO, 0, false, int, &[]);
    for k in 0..300 {
        b.add(&format!("f{k}"), KIND_FUNC, 2, false, if k % 2 == 0 { void_proto } else { int_proto }, &[]);
    }
    b.add("free_hook", KIND_FUNC, 1, false, void_proto, &[]);
    b.add("file_hook", KIND_FUNC, 1, false, int_proto, &[]);
    let mut e = Elf::new();
    e.license();
    e.btf(b.finish());
    let free = e.code("lsm/file_free_security", &[exit()]);
    e.func("free_hook", free, 0, 1);
    let file = e.code("lsm/file_open", &[exit()]);
    e.func("file_hook", file, 0, 1);
    let report = inspect("lsm_void.o", &e.finish());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let notes = |name: &str| report.programs.iter().find(|p| p.name == name).expect(name).notes.clone();
    assert_eq!(notes("free_hook"), Vec::<String>::new(), "declared void: r0 is not read");
    let file_notes = notes("file_hook");
    assert!(
        file_notes.len() == 1 && file_notes[0].contains("r0 is read before it is set"),
        "declared int: r0 is read: {file_notes:?}"
    );
}

/// The kernel checks a struct_ops program's r0 at exit only if the map member pointing to it returns a value:
/// the member's BTF prototype decides, over the program's own.
#[test]
fn struct_ops_members_returning_void_need_no_r0() {
    use bpfgate_test_support::btf::{Btf, KIND_DATASEC, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR};
    let mut b = Btf::new();
    let int = b.int("int", 4, 1);
    let void_proto = b.add("", KIND_FUNC_PROTO, 0, false, 0, &[]);
    let int_proto = b.add("", KIND_FUNC_PROTO, 0, false, int, &[]);
    let (void_ptr, int_ptr) = (b.ptr(void_proto), b.ptr(int_proto));
    let ops = b.struct_("my_ops", 16, &[("release", void_ptr, 0), ("init", int_ptr, 64)]);
    let var = b.add("ops", KIND_VAR, 0, false, ops, &[1]);
    b.add(".struct_ops", KIND_DATASEC, 1, false, 16, &[var, 0, 16]);
    // Each program's own prototype says the opposite of its member's.
    b.add("do_release", KIND_FUNC, 1, false, int_proto, &[]);
    b.add("do_init", KIND_FUNC, 1, false, void_proto, &[]);
    let mut e = Elf::new();
    e.license();
    e.btf(b.finish());
    let release = e.code("struct_ops/release", &[exit()]);
    let rel_sym = e.func("do_release", release, 0, 1);
    let init = e.code("struct_ops/init", &[exit()]);
    let init_sym = e.func("do_init", init, 0, 1);
    let data = e.section(".struct_ops", SHT_PROGBITS, 3, vec![0; 16]);
    e.symbol("ops", STB_GLOBAL | STT_OBJECT, data, 0, 16);
    // R_BPF_64_ABS64 (2): the function pointers of the map's members.
    e.rel(data, [(0, rel_sym, 2), (8, init_sym, 2)]);
    let report = inspect("struct_ops.o", &e.finish());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let notes = |name: &str| report.programs.iter().find(|p| p.name == name).expect(name).notes.clone();
    assert_eq!(notes("do_release"), Vec::<String>::new());
    let init_notes = notes("do_init");
    assert!(
        init_notes.len() == 1 && init_notes[0].contains("r0 is read before it is set"),
        "a member returning int needs r0: {init_notes:?}"
    );
}
