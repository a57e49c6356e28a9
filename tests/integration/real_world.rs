//! The committed real-world corpus (`corpus/`, issue 18): objects other people's loaders load, from Debian
//! packages. Every object inspects without an error unless it is in [`MALFORMED`], with its reason; every program
//! a loader loads is reported; and each program's helper calls agree with an independent reading of the object
//! by `llvm-objdump` (a port of `corpus/crosscheck.py` that needs no bpfgate binary).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfgate::{Loader, ObjectReport};

use crate::support::{files_with, repo};

/// Objects that are truly malformed, by path under `corpus/`, and why. Nothing else may give an error.
const MALFORMED: &[(&str, &str)] = &[
    ("deb/cilium-ebpf/invalid_btf_map_init-eb.elf", "cilium's test of a BTF map definition with data (rejected)"),
    ("deb/cilium-ebpf/invalid_btf_map_init-el.elf", "cilium's test of a BTF map definition with data (rejected)"),
    ("deb/cilium-ebpf/invalid_map-eb.elf", "cilium's test of a map definition with unknown non-zero fields"),
    ("deb/cilium-ebpf/invalid_map-el.elf", "cilium's test of a map definition with unknown non-zero fields"),
    ("deb/cilium-ebpf/invalid_map_static-eb.elf", "cilium's test of a static map (a section-symbol relocation)"),
    ("deb/cilium-ebpf/invalid_map_static-el.elf", "cilium's test of a static map (a section-symbol relocation)"),
    ("src/linux-samples/tcp_dumpstats_kern.o", "a .maps definition with plain u32 fields; libbpf rejects it too"),
    (
        "src/linux-selftests-gcc/test_global_func1.bpf.o",
        "GCC 12 adds the callee's byte offset to a relocated call's imm: libbpf's arithmetic leaves .text too",
    ),
    ("src/linux-selftests-gcc/test_pkt_access.bpf.o", "GCC 12 relocated calls, as test_global_func1"),
    ("src/linux-selftests-gcc/test_subprogs.bpf.o", "GCC 12 relocated calls, as test_global_func1"),
];

fn corpus_dir() -> PathBuf {
    repo().join("corpus")
}

fn objects() -> Vec<PathBuf> {
    let files = files_with(&corpus_dir(), &[".o", ".elf"]);
    assert!(files.len() >= 261, "corpus objects missing: {}", files.len());
    files
}

fn rel(path: &Path) -> String {
    path.strip_prefix(corpus_dir()).unwrap_or(path).display().to_string()
}

fn inspect(path: &Path) -> ObjectReport {
    bpfgate::inspect(&rel(path), &std::fs::read(path).expect("corpus object readable"))
}

#[test]
fn every_corpus_object_inspects_cleanly_unless_malformed() {
    let malformed: BTreeMap<&str, &str> = MALFORMED.iter().copied().collect();
    let mut failures = Vec::new();
    let (mut clean, mut programs) = (0, 0);
    let mut loaders: BTreeMap<Loader, usize> = BTreeMap::new();
    let objects = objects();
    for path in &objects {
        let name = rel(path);
        let report = inspect(path);
        programs += report.programs.len();
        for p in &report.programs {
            assert!(!p.loaders.is_empty(), "{name}: {} has no loader", p.name);
            for l in &p.loaders {
                *loaders.entry(*l).or_default() += 1;
            }
            let short = bpfgate::metadata::kernel_name(&p.name);
            assert!(p.kernel_name == short || p.kernel_name.is_empty(), "{name}: {}: {}", p.name, p.kernel_name);
        }
        match (report.errors.is_empty(), malformed.get(name.as_str())) {
            (true, None) => clean += 1,
            (false, Some(_)) => {}
            (true, Some(why)) => failures.push(format!("{name}: listed as malformed ({why}) but inspects cleanly")),
            (false, None) => failures.push(format!("{name}: {:?}", report.errors)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The counts corpus/README.md states.
    eprintln!("corpus: {} objects, {clean} clean, {programs} programs, by loader {loaders:?}", objects.len());
    assert_eq!(clean + MALFORMED.len(), objects.len());
    assert!(programs >= 1066, "{programs} programs");
}

/// The one llvm-objdump there is: 19 (what corpus/build.sh uses), else the distribution's default.
fn objdump() -> Option<&'static str> {
    ["llvm-objdump-19", "llvm-objdump"].into_iter().find(|t| Command::new(t).arg("--version").output().is_ok())
}

/// One executable section as llvm-objdump shows it.
#[derive(Default)]
struct Section {
    /// Instruction slot -> (opcode, src_reg, imm, relocation symbol).
    insns: BTreeMap<usize, (u8, u8, i32, Option<String>)>,
    /// Function symbols: (start, size in slots or 0, name, FUNC).
    funcs: Vec<(usize, usize, String, bool)>,
}

struct Objdump {
    sections: BTreeMap<String, Section>,
    /// Symbol -> (section, byte value); `*UND*` for undefined symbols.
    symbols: HashMap<String, (String, u64)>,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// `llvm-objdump -h -t -dr` of an object: code sections, their function symbols, instructions and relocations.
fn read_objdump(tool: &str, path: &Path) -> Option<Objdump> {
    let out = Command::new(tool).args(["-h", "-t", "-d", "-r"]).arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let big_endian = std::fs::read(path).ok()?.get(5) == Some(&2);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut exec = BTreeSet::new();
    let mut obj = Objdump { sections: BTreeMap::new(), symbols: HashMap::new() };
    let mut syms = Vec::new();
    let mut current: Option<String> = None;
    let mut last: Option<usize> = None;
    for line in text.lines() {
        // -h: `  3 xdp  00000198 0000000000000000 TEXT`
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 5
            && !line.contains('\t')
            && words[0].parse::<u32>().is_ok()
            && hex(words[2]).is_some()
            && hex(words[3]).is_some()
        {
            if words[4..].contains(&"TEXT") {
                exec.insert(words[1].to_owned());
            }
            continue;
        }
        // -t: `VALUE(16) FLAGS(7) SECTION\tSIZE(16) NAME`
        if line.len() > 26 && line.as_bytes()[16] == b' ' && hex(&line[..16]).is_some() && line.contains('\t') {
            let flags = &line[17..24];
            let rest = &line[25..];
            if let Some((sect, tail)) = rest.split_once('\t') {
                let (size, name) = tail.split_once(' ').unwrap_or((tail, ""));
                let name = name.trim_start_matches(".hidden ").trim_start_matches(".protected ");
                let value = hex(&line[..16]).unwrap_or(0);
                let size = hex(size).unwrap_or(0);
                obj.symbols.entry(name.to_owned()).or_insert((sect.to_owned(), value));
                if flags.as_bytes()[6] == b'd' {
                    obj.symbols.insert(sect.to_owned(), (sect.to_owned(), 0));
                }
                let func = flags.as_bytes()[6] == b'F';
                let global_notype = flags.as_bytes()[6] == b' ' && matches!(flags.as_bytes()[0], b'g' | b'w');
                if func || global_notype {
                    syms.push((sect.to_owned(), (value / 8) as usize, (size / 8) as usize, name.to_owned(), func));
                }
            }
            continue;
        }
        if let Some(s) = line.strip_prefix("Disassembly of section ").and_then(|l| l.strip_suffix(':')) {
            current = Some(s.to_owned());
            continue;
        }
        let Some(sect) = &current else { continue };
        // `      12:\t85 00 00 00 05 00 00 00\tcall 5`
        let t = line.trim_start();
        if let Some((idx, rest)) = t.split_once(":\t") {
            if let (Ok(idx), Some(bytes)) = (idx.parse::<usize>(), rest.get(..23)) {
                let b: Vec<u8> = bytes.split(' ').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
                if b.len() == 8 {
                    let src = if big_endian { b[1] & 0xf } else { b[1] >> 4 };
                    let imm = [b[4], b[5], b[6], b[7]];
                    let imm = if big_endian { i32::from_be_bytes(imm) } else { i32::from_le_bytes(imm) };
                    obj.sections.entry(sect.clone()).or_default().insns.insert(idx, (b[0], src, imm, None));
                    last = Some(idx);
                    continue;
                }
            }
        }
        // `\t\t0000000000000010:  R_BPF_64_64\thash_map`
        if let (Some(at), Some(sym)) = (last, t.split_whitespace().nth(2).filter(|_| t.contains("R_BPF_"))) {
            if let Some(i) = obj.sections.get_mut(sect).and_then(|s| s.insns.get_mut(&at)) {
                i.3 = Some(sym.to_owned());
            }
        }
    }
    obj.sections.retain(|name, _| exec.contains(name));
    for (sect, start, size, name, func) in syms {
        if let Some(s) = obj.sections.get_mut(&sect) {
            s.funcs.push((start, size, name, func));
        }
    }
    for s in obj.sections.values_mut() {
        s.funcs.sort();
    }
    Some(obj)
}

impl Objdump {
    /// The programs loaders load: every FUNC and GLOBAL NOTYPE symbol of a code section but `.text`, or the section
    /// itself when it has none (docs/loaders.md).
    fn programs(&self) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        for (name, s) in self.sections.iter().filter(|(n, _)| n.as_str() != ".text") {
            if s.funcs.is_empty() {
                out.push((name.clone(), name.clone(), 0));
            }
            let mut seen = BTreeSet::new();
            for (start, _, f, _) in &s.funcs {
                // Aliases: one function per start, named by a FUNC symbol first.
                if seen.insert(*start) {
                    let named = s.funcs.iter().filter(|g| g.0 == *start).max_by_key(|g| (g.3, std::cmp::Reverse(&g.2)));
                    out.push((name.clone(), named.map_or(f, |g| &g.2).clone(), *start));
                }
            }
        }
        out
    }

    /// The extent of the function at `at`: its size, else up to the next symbol, else the section's end.
    fn extent(&self, sect: &str, at: usize) -> (usize, usize) {
        let Some(s) = self.sections.get(sect) else { return (at, at) };
        let end = s.insns.keys().next_back().map_or(at, |&l| l + 1);
        let next = s.funcs.iter().map(|f| f.0).filter(|&f| f > at).min().unwrap_or(end);
        match s.funcs.iter().find(|f| f.0 == at && f.1 > 0) {
            Some(f) => (at, at + f.1),
            None => (at, next),
        }
    }

    /// Helper ids and whether a kfunc is called, over the function at (sect, start) and all it reaches.
    fn reach(&self, sect: &str, start: usize) -> (BTreeSet<i32>, bool) {
        let (mut helpers, mut kfunc) = (BTreeSet::new(), false);
        let mut seen = BTreeSet::new();
        let mut todo = vec![(sect.to_owned(), start)];
        while let Some((s, at)) = todo.pop() {
            if !seen.insert((s.clone(), at)) {
                continue;
            }
            let (a, e) = self.extent(&s, at);
            let Some(sec) = self.sections.get(&s).filter(|_| a < e) else { continue };
            for (&i, (op, src, imm, rel)) in sec.insns.range(a..e) {
                let target = rel.as_ref().and_then(|r| self.symbols.get(r));
                let undefined = target.is_some_and(|t| t.0 == "*UND*");
                let code = target.filter(|t| self.sections.contains_key(&t.0));
                match (*op, *src) {
                    (0x85, 2) => kfunc = true,
                    (0x85, _) if undefined => kfunc = true,
                    (0x85, 0) if rel.is_none() => {
                        helpers.insert(*imm);
                    }
                    (0x85, 1) => match code {
                        Some((ts, tv)) => todo.push((ts.clone(), (*tv as i64 / 8 + i64::from(*imm) + 1) as usize)),
                        None if rel.is_none() => todo.push((s.clone(), (i as i64 + i64::from(*imm) + 1) as usize)),
                        None => {}
                    },
                    (0x18, 4) if rel.is_none() => todo.push((s.clone(), (i as i64 + i64::from(*imm) + 1) as usize)),
                    (0x18, _) => {
                        if let Some((ts, tv)) = code {
                            todo.push((ts.clone(), ((*tv as i64 + i64::from(*imm)) / 8) as usize));
                        }
                    }
                    _ => {}
                }
            }
        }
        (helpers, kfunc)
    }
}

#[test]
fn corpus_programs_and_helpers_agree_with_llvm_objdump() {
    let Some(tool) = objdump() else {
        assert!(
            std::env::var_os("BPFGATE_REQUIRE_CORPUS").is_none_or(|v| v != "1"),
            "no llvm-objdump and BPFGATE_REQUIRE_CORPUS=1"
        );
        eprintln!("SKIPPED: no llvm-objdump-19 or llvm-objdump");
        return;
    };
    let malformed: BTreeSet<&str> = MALFORMED.iter().map(|(p, _)| *p).collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in objects() {
        let name = rel(&path);
        if malformed.contains(name.as_str()) {
            continue;
        }
        let report = inspect(&path);
        let Some(obj) = read_objdump(tool, &path) else {
            failures.push(format!("{name}: {tool} cannot read it"));
            continue;
        };
        let got: BTreeMap<(&str, &str), &bpfgate::ProgramMetadata> =
            report.programs.iter().map(|p| ((p.section.as_str(), p.name.as_str()), p)).collect();
        let expected = obj.programs();
        for (sect, prog, start) in &expected {
            let Some(p) = got.get(&(sect.as_str(), prog.as_str())) else {
                failures.push(format!("{name}: program {sect}/{prog} not reported"));
                continue;
            };
            let (helpers, kfunc) = obj.reach(sect, *start);
            let mine: BTreeSet<i32> = p.helpers.iter().map(|h| h.id as i32).collect();
            if mine != helpers {
                failures.push(format!("{name}: {sect}/{prog}: helpers {mine:?}, objdump {helpers:?}"));
            }
            if p.kfuncs.is_empty() == kfunc {
                failures
                    .push(format!("{name}: {sect}/{prog}: kfuncs {:?}, objdump sees a kfunc call: {kfunc}", p.kfuncs));
            }
            checked += 1;
        }
        if got.len() != expected.len() {
            failures.push(format!("{name}: {} programs reported, objdump counts {}", got.len(), expected.len()));
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 1000, "only {checked} programs checked");
}
