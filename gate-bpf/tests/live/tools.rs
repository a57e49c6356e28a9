//! Debian's libbpf-tools objects under the gate (issue 17): `bpfgate check --gate --btf /sys/kernel/btf/vmlinux`
//! predicts the gate's decision for CO-RE programs, which libbpf rewrites before they reach the kernel.
//!
//! Each program is loaded alone by libbpf, as the tool would load it: `heap` not created where the object has one
//! (libbpf-tools' compat code does that on every kernel with ring buffers), the rest as declared. Programs the
//! library cannot judge after the rewriting are listed, not compared.

use std::ffi::{CStr, CString};

use bpfgate::policy::{Decision, Policy, Subject};
use bpfgate::{InspectOptions, TargetBtf};
use bpfgate_gate::event::VERDICT_DENY;
use libbpf_rs::libbpf_sys;

use super::gate::{named, this_exe, Live};
use super::live;

/// See gate.rs: straight to stderr, the evidence in the VM logs.
macro_rules! tools {
    ($($t:literal),* $(,)?) => {
        &[$(($t, include_bytes!(concat!("../../../corpus/embedded/libbpf-tools/", $t, ".0.o")) as &[u8])),*]
    };
}

/// Every libbpf-tools object of the corpus (Debian's libbpf-tools 0.26.0, corpus/MANIFEST.tsv).
const TOOLS: &[(&str, &[u8])] = tools![
    "bashreadline",
    "bindsnoop",
    "biolatency",
    "biopattern",
    "biosnoop",
    "biostacks",
    "biotop",
    "bitesize",
    "cachestat",
    "capable",
    "cpudist",
    "cpufreq",
    "drsnoop",
    "execsnoop",
    "exitsnoop",
    "filelife",
    "filetop",
    "fsdist",
    "fsslower",
    "funclatency",
    "gethostlatency",
    "hardirqs",
    "javagc",
    "klockstat",
    "ksnoop",
    "llcstat",
    "mdflush",
    "mountsnoop",
    "numamove",
    "offcputime",
    "oomkill",
    "opensnoop",
    "readahead",
    "runqlat",
    "runqlen",
    "runqslower",
    "sigsnoop",
    "slabratetop",
    "softirqs",
    "solisten",
    "statsnoop",
    "syscount",
    "tcpconnect",
    "tcpconnlat",
    "tcplife",
    "tcprtt",
    "tcpstates",
    "tcpsynbl",
    "tcptop",
    "tcptracer",
    "vfsstat",
    "wakeuptime",
];

/// Loads program `prog` of an object with libbpf, the maps in `not_created` left out.
fn load(bytes: &[u8], prog: &str, not_created: &[String]) {
    let opts = libbpf_sys::bpf_object_open_opts {
        sz: size_of::<libbpf_sys::bpf_object_open_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: the buffer outlives the call (libbpf copies it); opts is a valid, sized options struct.
    let obj = unsafe { libbpf_sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len() as _, &opts) };
    // SAFETY: libbpf_get_error accepts any pointer returned by libbpf.
    if obj.is_null() || unsafe { libbpf_sys::libbpf_get_error(obj.cast()) } != 0 {
        return;
    }
    let mut p = std::ptr::null_mut();
    loop {
        // SAFETY: obj is a live object; p is null or a program of obj.
        p = unsafe { libbpf_sys::bpf_object__next_program(obj, p) };
        if p.is_null() {
            break;
        }
        // SAFETY: p is a program of obj; its name is a NUL-terminated string owned by libbpf.
        let name = unsafe { CStr::from_ptr(libbpf_sys::bpf_program__name(p)) };
        // SAFETY: p is a program of obj that is not loaded yet.
        unsafe { libbpf_sys::bpf_program__set_autoload(p, name.to_bytes() == prog.as_bytes()) };
    }
    for m in not_created {
        let c = CString::new(m.as_str()).expect("a map name");
        // SAFETY: obj is a live, opened object; c is NUL-terminated.
        let map = unsafe { libbpf_sys::bpf_object__find_map_by_name(obj, c.as_ptr()) };
        if !map.is_null() {
            // SAFETY: map is a map of obj, which is not loaded yet.
            unsafe { libbpf_sys::bpf_map__set_autocreate(map, false) };
        }
    }
    // SAFETY: obj is a live, opened object. The result does not matter: the gate decides before the verifier,
    // and a load libbpf stops earlier has no decision to compare.
    unsafe { libbpf_sys::bpf_object__load(obj) };
    // SAFETY: obj is closed exactly once; this unloads whatever loaded.
    unsafe { libbpf_sys::bpf_object__close(obj) };
}

#[test]
fn gate_libbpf_tools_match_check_gate_btf() {
    let Some(_guard) = live("gate_libbpf_tools_match_check_gate_btf") else { return };
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let target = TargetBtf::parse(&vmlinux).expect("the kernel's BTF parses");
    let exe = this_exe();
    // Poison calls and helpers the kernel lacks count as `unknown` until they are known not to execute: a
    // policy denying `unknown` tells the two treatments apart.
    let text = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: tools\n    subject:\n      exe: {exe}\n    \
         capabilities:\n      deny: [unknown, user_write, send_signal, override_return]\n"
    );
    let policy = Policy::parse("tools.yaml", &text).expect("the test policy parses");
    let subject = Subject { exe: Some(exe.clone()), cgroup: None, uid: Some(0) };
    let mut g = Live::new();
    g.install(&text);
    g.take();
    let (mut compared, mut denied, mut poisoned) = (0, 0, 0);
    let (mut failures, mut unjudged) = (Vec::new(), Vec::new());
    for &(tool, bytes) in TOOLS {
        let plain = bpfgate::inspect(tool, bytes);
        let not_created: Vec<String> = plain.maps.iter().filter(|m| m.name == "heap").map(|m| m.name.clone()).collect();
        let options = InspectOptions { target_btf: Some(&target), not_created, ..Default::default() };
        let report = bpfgate::inspect_with(tool, bytes, &options);
        poisoned += report.load_rewrites.as_ref().map_or(0, |r| r.poisoned.len());
        unjudged.extend(report.errors.iter().map(|e| e.message.clone()));
        for p in &report.programs {
            load(bytes, &p.name, &options.not_created);
            let events = g.take();
            let Some(e) = named(&events, &p.name).last().copied() else { continue };
            let want = policy.evaluate(&subject, &bpfgate::kernel_view::judged(p, &report.maps), &report.maps);
            let gate_denies = e.verdict == VERDICT_DENY;
            compared += 1;
            denied += usize::from(gate_denies);
            if gate_denies != (want.decision == Decision::Deny) {
                failures.push(format!("{tool} {}: gate {} / check --gate --btf {want}", p.name, g.describe(e)));
            }
        }
    }
    report!(
        "libbpf-tools: check --gate --btf against the gate: {compared} programs, {denied} denied by both, \
         {poisoned} instructions poisoned; {} not judged by the library:\n  {}",
        unjudged.len(),
        unjudged.join("\n  ")
    );
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 100, "only {compared} programs compared");
}

/// The instructions libbpf submits for program `prog` (loaded alone, `not_created` maps left out), as libbpf
/// keeps them after its relocations; `None` when libbpf stopped before relocating.
fn libbpf_insns(bytes: &[u8], prog: &str, not_created: &[String]) -> Option<Vec<bpfgate::unstable::insn::RawInsn>> {
    let opts = libbpf_sys::bpf_object_open_opts {
        sz: size_of::<libbpf_sys::bpf_object_open_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: as in `load`.
    let obj = unsafe { libbpf_sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len() as _, &opts) };
    // SAFETY: libbpf_get_error accepts any pointer returned by libbpf.
    if obj.is_null() || unsafe { libbpf_sys::libbpf_get_error(obj.cast()) } != 0 {
        return None;
    }
    let (mut p, mut ours) = (std::ptr::null_mut(), std::ptr::null_mut());
    loop {
        // SAFETY: obj is a live object; p is null or a program of obj.
        p = unsafe { libbpf_sys::bpf_object__next_program(obj, p) };
        if p.is_null() {
            break;
        }
        // SAFETY: p is a program of obj; its name is a NUL-terminated string owned by libbpf.
        let mine = unsafe { CStr::from_ptr(libbpf_sys::bpf_program__name(p)) }.to_bytes() == prog.as_bytes();
        if mine {
            ours = p;
        }
        // SAFETY: p is a program of obj that is not loaded yet.
        unsafe { libbpf_sys::bpf_program__set_autoload(p, mine) };
    }
    for m in not_created {
        let c = CString::new(m.as_str()).expect("a map name");
        // SAFETY: obj is a live, opened object; c is NUL-terminated.
        let map = unsafe { libbpf_sys::bpf_object__find_map_by_name(obj, c.as_ptr()) };
        if !map.is_null() {
            // SAFETY: map is a map of obj, which is not loaded yet.
            unsafe { libbpf_sys::bpf_map__set_autocreate(map, false) };
        }
    }
    // SAFETY: obj is a live, opened object; whether the kernel accepts the program does not matter here.
    unsafe { libbpf_sys::bpf_object__load(obj) };
    let mut out = None;
    if !ours.is_null() {
        // SAFETY: ours is a program of obj, still open; libbpf owns the instructions until the object closes.
        let (insns, n) = unsafe { (libbpf_sys::bpf_program__insns(ours), libbpf_sys::bpf_program__insn_cnt(ours)) };
        if !insns.is_null() && n > 0 {
            // SAFETY: libbpf's instructions are `n` contiguous 8-byte `struct bpf_insn`s.
            let raw = unsafe { std::slice::from_raw_parts(insns.cast::<u8>(), n as usize * 8) };
            out = Some(raw.chunks_exact(8).filter_map(|b| bpfgate::unstable::insn::RawInsn::parse(b, true)).collect());
        }
    }
    // SAFETY: obj is closed exactly once.
    unsafe { libbpf_sys::bpf_object__close(obj) };
    out
}

/// libbpf's own CO-RE relocation on this kernel against the library's: every instruction a CO-RE relocation
/// record names, and every one the library poisons, in each program's entry function and its subprograms
/// (placed where the library's linked layout puts them: where it could analyze the program, which the relocated
/// object may not allow yet), equal to what libbpf submits. No gate: libbpf only has to get as far as relocating.
#[test]
fn gate_libbpf_tools_relocated_as_libbpf_does() {
    use bpfgate::unstable::{btf, core_reloc, elf};
    let Some(_guard) = live("gate_libbpf_tools_relocated_as_libbpf_does") else { return };
    let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let target = core_reloc::Target::parse(&vmlinux).expect("the kernel's BTF parses");
    let (mut compared, mut programs, mut poisoned) = (0, 0, 0);
    let mut failures = Vec::new();
    for &(tool, bytes) in TOOLS {
        let mut obj = elf::Object::parse(bytes).expect("parses");
        let not_created: Vec<String> = obj.maps.iter().filter(|m| m.name == "heap").map(|m| m.name.clone()).collect();
        // (section, instruction) of each CO-RE record, owned: the records borrow the object's BTF, which the
        // rewrite below takes.
        let relos: Vec<(String, usize)> = match (&obj.btf_data, &obj.btf_ext_data) {
            (Some(b), Some(e)) => core_reloc::parse_core_relos(e, true, &btf::index(b, true).expect("BTF"))
                .expect(".BTF.ext")
                .into_iter()
                .map(|r| (r.section.to_owned(), r.insn))
                .collect(),
            _ => Vec::new(),
        };
        let out =
            core_reloc::rewrite(&mut obj, Some(&target), &core_reloc::LoaderChoices { not_created: &not_created });
        assert!(out.errors.is_empty(), "{tool}: {:?}", out.errors);
        let layout = bpfgate::inspect(tool, bytes);
        for p in &obj.programs {
            // (section position, section offset, linked offset) of the entry function and its subprograms. The
            // layout does not depend on the rewriting, so the report of the object as compiled gives it.
            let mut funcs = vec![(p.section, p.start, 0usize)];
            if let Some(m) = layout.programs.iter().find(|m| m.name == p.name && m.section_offset as usize == p.start) {
                for s in &m.subprograms {
                    if let Some(pos) = obj.sections.iter().position(|c| c.name == s.section) {
                        funcs.push((pos, s.section_offset as usize, s.start as usize));
                    }
                }
            }
            let mut touched = Vec::new();
            for &(pos, start, linked) in &funcs {
                let sec = &obj.sections[pos];
                let end = sec.func_end(start);
                let mut mine: Vec<usize> = relos
                    .iter()
                    .filter(|(section, _)| *section == sec.name)
                    .map(|&(_, insn)| insn)
                    .chain(out.poisoned.iter().filter(|x| x.section == sec.name).flat_map(|x| [x.insn, x.insn + 1]))
                    .filter(|&i| (start..end).contains(&i))
                    .collect();
                mine.sort_unstable();
                mine.dedup();
                poisoned +=
                    out.poisoned.iter().filter(|x| x.section == sec.name && (start..end).contains(&x.insn)).count();
                touched.extend(mine.into_iter().map(|i| (pos, i, linked + i - start)));
            }
            if touched.is_empty() {
                continue;
            }
            let Some(theirs) = libbpf_insns(bytes, &p.name, &not_created) else { continue };
            programs += 1;
            for (pos, i, at) in touched {
                let (ours, libbpf) = (obj.sections[pos].insns[i], theirs.get(at).copied());
                compared += 1;
                if Some(ours) != libbpf {
                    let sec = &obj.sections[pos].name;
                    failures
                        .push(format!("{tool} {} {sec}:{i} (linked {at}): ours {ours:?}, libbpf {libbpf:?}", p.name));
                }
            }
        }
    }
    report!("libbpf-tools: {compared} relocated or poisoned instructions in {programs} programs equal to libbpf's ({poisoned} poisoned)");
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    assert!(programs >= 50 && compared >= 300, "{programs} programs, {compared} instructions");
}
