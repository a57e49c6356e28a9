//! Resource limits on hostile input (issue 6): every generated object (see `bpfgate_test_support::hostile`) gives a
//! report or an error naming the limit and where it was hit, never a panic, and the work stays bounded. The inputs here
//! are sized to stay fast in debug builds while still being far past where quadratic work would show (each test notes
//! what the unbounded version cost); `cargo xtask limits` runs the full sizes and docs/limits.md has the measured time
//! and memory.

use std::time::{Duration, Instant};

use bpfgate::metadata::ObjectReport;
use bpfgate::policy::{ErrorKind, Policy};
use bpfgate::unstable::analysis::{self, AnalysisError, MAX_CALL_FRAMES, MAX_FUNCS, MAX_INSNS, MAX_SHARED_MAPS};
use bpfgate::unstable::elf::{ElfError, NameError, Object, MAX_ERRORS, MAX_NAME_LEN, MAX_OBJECT_FUNCS};
use bpfgate::InspectErrorKind::{Relocation, Tainted};

use bpfgate_test_support::elf::*;
use bpfgate_test_support::hostile::*;

use crate::support::bpfgate;

/// Generous for a debug build on a loaded machine, and far below what the unbounded versions took.
const SLOW: Duration = Duration::from_secs(30);

/// `inspect` under a wall-clock bound.
fn inspect(bytes: &[u8]) -> ObjectReport {
    let start = Instant::now();
    let report = bpfgate::inspect("hostile.o", bytes);
    assert!(start.elapsed() < SLOW, "inspect took {:?}", start.elapsed());
    report
}

fn parse(bytes: &[u8]) -> Object<'static> {
    Object::parse(bytes).expect("the object parses").without_btf()
}

/// The analysis of the object's program at the start of its section.
fn analyze_only(bytes: &[u8]) -> Result<bpfgate::ProgramMetadata, AnalysisError> {
    let obj = parse(bytes);
    // Its callees are static functions of the program's section: programs too for cilium/ebpf and aya, but the
    // entry is the first.
    assert!(obj.programs.first().is_some_and(|p| p.start == 0), "{:?}", obj.errors);
    analysis::analyze(&obj, &obj.programs[0])
}

#[test]
fn extended_section_numbering_is_read() {
    // 65,300 code sections plus the tables: e_shnum is 0, e_shstrndx SHN_XINDEX, and the symbols of the sections
    // past 0xff00 SHN_XINDEX with their index in .symtab_shndx.
    let n = 65_300;
    let bytes = many_sections(n);
    assert_eq!(&bytes[60..64], &[0, 0, 0xff, 0xff], "e_shnum 0 and e_shstrndx SHN_XINDEX");
    let report = inspect(&bytes);
    assert!(report.errors.is_empty(), "{:?}", &report.errors[..report.errors.len().min(3)]);
    assert_eq!(report.programs.len(), n);
    let last = report.programs.last().expect("programs");
    assert_eq!((last.name.as_str(), last.section.as_str()), ("p65299", "kprobe/s65299"));
}

#[test]
fn the_text_report_of_many_sections_takes_linear_time() {
    // Each capability's disassembly looked its section up by scanning them all: 40,000 programs with three
    // capabilities each were 2.4e9 name compares.
    let n = 40_000;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("limits-text-report.bpf.o");
    std::fs::write(&path, many_sections_printk(n)).expect("written");
    let start = Instant::now();
    let out = bpfgate(&["inspect", &path.display().to_string()]);
    assert!(start.elapsed() < SLOW, "{:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("trace_printk     insn 2: call bpf_trace_printk#6").count(), n);
}

#[test]
fn a_million_symbols_are_read() {
    let report = inspect(&many_symbols(1_000_000));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.programs.len(), 1);
}

#[test]
fn many_programs_in_one_section_take_linear_time() {
    // Each program looked its extent up by scanning the section's functions: 131,072 programs were 8.6e9 steps.
    let n = MAX_OBJECT_FUNCS;
    let report = inspect(&many_programs(n));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.programs.len(), n);
}

#[test]
fn too_many_functions_fail_the_object_naming_the_limit() {
    let err = Object::parse(&many_programs(MAX_OBJECT_FUNCS + 1)).expect_err("over the limit");
    assert!(matches!(err, ElfError::TooMany { what: "function symbols", limit: MAX_OBJECT_FUNCS }), "{err}");
    let report = inspect(&many_programs(MAX_OBJECT_FUNCS + 1));
    assert_eq!(messages(&report), ["hostile.o: the object has more than 131072 function symbols"]);
}

#[test]
fn a_program_one_instruction_over_the_kernels_limit_is_an_error() {
    let err = analyze_only(&long_program(MAX_INSNS + 1)).expect_err("over the limit");
    assert_eq!(err, AnalysisError::TooManyInsns { section: "kprobe/long".into(), insn: 0, limit: MAX_INSNS });
    let report = inspect(&long_program(MAX_INSNS + 1));
    assert_eq!(
        messages(&report),
        ["hostile.o: program long: section kprobe/long insn 0: program reaches more than 1000000 instructions \
          (the kernel's limit)"]
    );
}

#[test]
fn call_chains_deeper_than_the_kernels_frames_are_an_error_without_recursion() {
    // On a 64 KiB stack: a recursive walk of the 4,096-deep chain would overflow it.
    let run = || {
        for pointer in [false, true] {
            let err = analyze_only(&call_chain(MAX_FUNCS - 1, pointer)).expect_err("too deep");
            assert_eq!(
                err,
                AnalysisError::CallTooDeep {
                    section: "kprobe/chain".into(),
                    insn: 0,
                    frames: MAX_FUNCS,
                    limit: MAX_CALL_FRAMES
                }
            );
            // The kernel's own limit: 8 frames load, 9 do not.
            let ok = analyze_only(&call_chain(MAX_CALL_FRAMES - 1, pointer)).expect("8 frames analyze");
            assert_eq!(ok.subprograms.len(), MAX_CALL_FRAMES - 1);
            let err = analyze_only(&call_chain(MAX_CALL_FRAMES, pointer)).expect_err("9 frames");
            assert!(matches!(err, AnalysisError::CallTooDeep { frames: 9, .. }), "{err}");
        }
    };
    std::thread::Builder::new().stack_size(64 << 10).spawn(run).expect("thread").join().expect("no overflow");
}

#[test]
fn more_functions_than_the_limit_are_an_error() {
    let ok = analyze_only(&fan_out(MAX_FUNCS - 1)).expect("4,096 functions analyze");
    assert_eq!(ok.subprograms.len(), MAX_FUNCS - 1);
    let err = analyze_only(&fan_out(MAX_FUNCS)).expect_err("4,097 functions");
    assert!(matches!(&err, AnalysisError::TooManyFuncs { section, limit: MAX_FUNCS, .. } if section == "kprobe/fan"));
    assert!(err.to_string().contains("more than 4096 functions"), "{err}");
}

#[test]
fn call_cycles_are_recursion_errors() {
    for len in [1, 2, 4096] {
        let err = analyze_only(&call_cycle(len)).expect_err("a cycle");
        assert!(matches!(&err, AnalysisError::Recursion { section, .. } if section == "kprobe/cycle"), "{err}");
    }
}

#[test]
fn a_million_relocations_on_one_instruction_are_one_relocation() {
    let bytes = relocs_one_insn(1_000_000);
    assert_eq!(parse(&bytes).sections[0].relocs.len(), 1);
    let report = inspect(&bytes);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.programs.len(), 1);
}

#[test]
fn a_million_bad_relocations_are_one_error_and_a_count() {
    for bytes in [relocs_out_of_range(1_000_000), relocs_bad_symbol(1_000_000)] {
        let obj = parse(&bytes);
        let relocs: Vec<&ElfError> =
            obj.errors.iter().filter(|e| matches!(e, ElfError::BadRelocation { .. })).collect();
        assert_eq!(relocs.len(), 2, "{relocs:?}");
        assert!(relocs[1].to_string().contains("and 999999 more bad relocations"), "{}", relocs[1]);
        // The section is still known to be broken: its program is not analyzed.
        let report = bpfgate::unstable::inspect_object("hostile.o", &obj);
        assert!(report.programs.is_empty());
        assert_eq!(report.errors.len(), 3, "{:?}", report.errors);
        assert!(
            report.errors[2].message.contains("not analyzed: section kprobe/x has a bad relocation"),
            "{:?}",
            report.errors
        );
        // The same, typed: the program, its section and the kind.
        let e = &report.errors[2];
        assert_eq!((e.kind, e.section.as_deref(), e.program.as_deref()), (Tainted, Some("kprobe/x"), Some("prog")));
        assert!(report.errors[0].kind == Relocation && report.errors[0].offset.is_some(), "{:?}", report.errors[0]);
    }
}

#[test]
fn kconfig_relocations_do_not_search_the_maps_each_time() {
    // Each relocation looked the .kconfig map up among all maps: 100,000 x 100,000 string compares.
    let report = inspect(&kconfig_storm(100_000, 100_000));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.maps.len(), 100_001);
    assert_eq!(report.maps.last().map(|m| m.name.as_str()), Some(".kconfig"));
}

#[test]
fn programs_sharing_a_subprogram_share_the_object_budget() {
    let obj = parse(&shared_subprogram(3, 1000));
    assert_eq!(obj.programs.len(), 3);
    // Enough for one program (1,002 instructions and its report entries), not for two.
    let mut budget = 1500;
    analysis::analyze_within(&obj, &obj.programs[0], &mut budget).expect("the first fits");
    assert!(budget < 1000, "charged: {budget} left");
    let err = analysis::analyze_within(&obj, &obj.programs[1], &mut budget).expect_err("the second does not");
    assert_eq!(err, AnalysisError::ObjectTooLarge { limit: analysis::MAX_OBJECT_WORK });

    // Through inspect: a program with 512-byte names counts them; with its 2 instructions, the report entry and
    // the license, 1,598 each. 20,000 of them stop after ceil(16,000,000 / 1,598) = 10,013, with one error.
    let report = inspect(&programs_long_names(20_000));
    assert_eq!(report.programs.len(), 10_013, "{:?}", report.errors);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].message.contains("exceed the analysis budget"), "{}", report.errors[0]);
    assert!(report.errors[0].message.contains("nor are the 9986 programs after it"), "{}", report.errors[0]);
}

#[test]
fn a_program_touching_thousands_of_unnamed_maps_is_an_error() {
    // Maps from the 128th on are listed one by one up to MAX_SHARED_MAPS of them; past that each program would
    // repeat the object's whole map table, so it is an error.
    let report = inspect(&many_maps(127 + MAX_SHARED_MAPS, 1));
    assert_eq!(report.programs[0].maps.len(), MAX_SHARED_MAPS);
    let obj = parse(&many_maps(128 + MAX_SHARED_MAPS, 2));
    for prog in &obj.programs {
        let err = analysis::analyze(&obj, prog).expect_err("too many maps to list");
        assert!(matches!(err, AnalysisError::TooManyMaps { count: 1025, limit: MAX_SHARED_MAPS, .. }), "{err}");
    }
}

#[test]
fn long_and_unterminated_names_are_errors_not_scans() {
    // 2,000 functions named by one 1 MiB run: each lookup scanned (and each copy held) a megabyte.
    for terminated in [true, false] {
        let obj = parse(&long_func_names(2000, 1 << 20, terminated));
        assert_eq!(obj.errors.len(), MAX_ERRORS + 1);
        assert!(matches!(
            &obj.errors[0],
            ElfError::BadSymbolName { section, symbol: 1, reason: NameError::TooLong { limit: MAX_NAME_LEN } }
                if section == "kprobe/x"
        ));
        assert_eq!(obj.errors[MAX_ERRORS].to_string(), "1000 more errors not shown (only the first 1000 are kept)");
    }
    // Names of exactly the limit are read.
    let obj = parse(&long_func_names(3, MAX_NAME_LEN, true));
    assert!(obj.errors.is_empty(), "{:?}", obj.errors);
    assert_eq!(obj.programs.len(), 3);
    // Code sections whose name cannot be read are errors, not silently skipped programs.
    let obj = parse(&long_section_names(100, 1 << 20));
    assert_eq!(obj.errors.len(), 100);
    assert!(obj.programs.is_empty());
    assert_eq!(obj.errors[0].to_string(), "executable section 2: name is longer than 512 bytes");
}

#[test]
fn relocations_against_overlong_extern_names_are_errors() {
    let report = inspect(&long_extern_name(10_000, MAX_NAME_LEN + 1));
    assert!(report.programs.is_empty());
    assert!(report.errors[0].message.contains("undefined symbol without a readable name"), "{:?}", report.errors);
    assert!(report.errors[1].message.contains("and 9999 more bad relocations"), "{:?}", report.errors);
}

#[test]
fn the_license_is_what_the_kernel_reads_of_it() {
    let mut e = Elf::new();
    e.section("license", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, vec![b'G'; 1 << 20]);
    let s = e.code("kprobe/x", &ret0());
    e.func("prog", s, 0, 2);
    let report = inspect(&e.finish());
    assert_eq!(report.license.map(|l| l.len()), Some(bpfgate::unstable::elf::MAX_LICENSE_LEN));
}

#[test]
fn stack_slots_outside_the_kernels_frame_are_not_tracked_one_by_one() {
    // A chain of 5,000 slots, one slot further per trip round the loop, was 5,000 trips of 30,000 instructions.
    let start = Instant::now();
    let meta = analyze_only(&slow_fixpoint(5000)).expect("analyzes");
    assert!(start.elapsed() < SLOW, "{:?}", start.elapsed());
    assert!(meta.capabilities.is_empty(), "{:?}", meta.capabilities);
    // Misaligned 8-byte slots (every byte offset of the frame) count as unknown offsets too.
    let meta = analyze_only(&slow_fixpoint_in_frame(1000, 1)).expect("analyzes");
    assert!(meta.capabilities.is_empty(), "{:?}", meta.capabilities);
    // Ten thousand spills far past the frame, then a hundred blocks.
    let meta = analyze_only(&stack_slots(10_000, 100)).expect("analyzes");
    assert_eq!(meta.insn_count, 1 + 4096 + 3 * (10_000 - 4096) + 100 + 1);
}

#[test]
fn deep_and_alias_bomb_policies_are_errors() {
    let what = |text: &str| Policy::parse("hostile.yaml", text).expect_err("rejected").0[0].what.clone();
    // saphyr-parser's own recursion limit or ours, whichever comes first.
    let deep = what(&yaml_deep(100_000));
    assert!(matches!(&deep, ErrorKind::TooDeep { .. } | ErrorKind::Syntax { .. }), "{deep}");
    assert!(matches!(what(&yaml_deep(100)), ErrorKind::TooDeep { max_depth: 64 }));
    assert!(matches!(what(&yaml_laughs(9)), ErrorKind::TooLarge { max_nodes: 200_000 }));
    assert!(matches!(what(&yaml_many_rules(100_000)), ErrorKind::TooLarge { .. }));
}

#[test]
fn many_aliases_of_an_early_anchor_take_linear_time() {
    // Relative to a document of as many plain scalars, so the bound holds in debug builds and on a busy machine:
    // a scan of all anchors per alias made this 100,000 times more work.
    let mut plain = String::from("version: 1\nx: [");
    for i in 0..200_000 {
        plain.push_str(&format!("a{i} v, "));
    }
    plain.push_str("]\n");
    let time = |yaml: &str| {
        let start = Instant::now();
        let _ = Policy::parse("hostile.yaml", yaml);
        start.elapsed()
    };
    let base = time(&plain);
    let aliased = time(&yaml_many_anchors(100_000, 100_000));
    assert!(aliased < base * 3, "aliases {aliased:?} vs plain scalars {base:?}");
}

#[test]
fn nested_anchors_count_against_the_node_budget() {
    let err = Policy::parse("hostile.yaml", &yaml_nested_anchors(60, 190_000)).expect_err("rejected");
    assert!(matches!(err.0[0].what, ErrorKind::TooLarge { .. }), "{err}");
}

/// The errors' messages, as printed.
fn messages(report: &ObjectReport) -> Vec<&str> {
    report.errors.iter().map(|e| e.message.as_str()).collect()
}
