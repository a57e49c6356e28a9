//! Fixture programs: each `.bpf.c` states in its opening comment what the analysis must report; these tests read
//! that spec and check the library against it, then compare the whole report with a golden JSON file.
//!
//! `BLESS=1 cargo test --test integration fixtures` rewrites the golden files after an intended change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bpfgate::metadata::{ObjectReport, ProgramMetadata};

use crate::support::{files_with, fixtures, repo};

/// What a fixture's comment says about one program.
#[derive(Debug, Default)]
struct Spec {
    capabilities: Option<BTreeSet<String>>,
    helpers: Option<BTreeSet<u32>>,
    kfuncs: Option<BTreeSet<String>>,
    maps: Option<BTreeMap<String, (bool, bool)>>,
    prog_type: Option<String>,
    attach_target: Option<String>,
}

/// Drops parenthesized notes, including one left open at the end of the line.
fn strip_notes(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Helper ids: `name (id)` entries, or a bare id.
fn helper_ids(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.split_whitespace().filter_map(|t| t.trim_matches(|c| c == '(' || c == ')' || c == ',').parse().ok())
}

/// `name read B, write B` entries separated by `;`.
fn map_entries(s: &str) -> Vec<(String, (bool, bool))> {
    s.split(';')
        .filter_map(|e| match strip_notes(e).split_whitespace().collect::<Vec<_>>().as_slice() {
            [name, "read", r, "write", w, ..] => {
                Some(((*name).to_owned(), (r.trim_end_matches(',') == "true", w.trim_end_matches(',') == "true")))
            }
            _ => None,
        })
        .collect()
}

fn list(s: &str) -> Vec<String> {
    let s = strip_notes(s);
    let s = s.trim();
    if s == "none" || s.starts_with("none ") {
        return Vec::new();
    }
    s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key} "))?;
    let rest = &line[at + key.len() + 1..];
    Some(rest.split(',').next().unwrap_or("").trim())
}

/// Parses the "Expected report:" part of a fixture's opening comment.
fn parse_spec(source: &str) -> BTreeMap<String, Spec> {
    let comment = source.split("*/").next().unwrap_or("");
    let mut specs: BTreeMap<String, Spec> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut last_key = "";
    for raw in comment.lines() {
        let line = raw.trim_start_matches([' ', '*', '/']).trim_end();
        if let Some(rest) = line.strip_prefix("program ") {
            let name = rest.split(':').next().unwrap_or("").trim().to_owned();
            let spec = specs.entry(name.clone()).or_default();
            spec.prog_type = field(rest, "prog_type").map(str::to_owned);
            spec.attach_target = field(rest, "attach_target").map(str::to_owned);
            if spec.attach_target.as_deref() == Some("none") {
                spec.attach_target = Some(String::new());
            }
            current = Some(name);
            last_key = "";
            continue;
        }
        let Some(name) = current.clone() else { continue };
        let spec = specs.entry(name).or_default();
        if spec.attach_target.is_none() {
            spec.attach_target = field(line, "attach_target").map(str::to_owned);
        }
        if spec.prog_type.is_none() {
            spec.prog_type = field(line, "prog_type").map(str::to_owned);
        }
        let stripped = strip_notes(line);
        let (key, value) = match stripped.split_once(':') {
            Some((k, v)) if !k.contains(' ') || k.contains(", ") => (k.trim(), v),
            _ => ("", stripped.as_str()),
        };
        match key {
            "capabilities" => spec.capabilities = Some(list(value).into_iter().collect()),
            // Helper ids are in parentheses, so they are read from the line before notes are stripped.
            "helpers" => spec.helpers = Some(helper_ids(line.split_once(':').map_or("", |l| l.1)).collect()),
            "kfuncs" => spec.kfuncs = Some(list(value).into_iter().collect()),
            "maps" => spec.maps = Some(map_entries(value).into_iter().collect()),
            k if k.contains(", ") && value.trim() == "none" => {
                for k in k.split(", ") {
                    match k.trim() {
                        "capabilities" => spec.capabilities = Some(BTreeSet::new()),
                        "helpers" => spec.helpers = Some(BTreeSet::new()),
                        "kfuncs" => spec.kfuncs = Some(BTreeSet::new()),
                        "maps" => spec.maps = Some(BTreeMap::new()),
                        _ => {}
                    }
                }
            }
            // A continuation line of the previous key.
            "" => match last_key {
                "helpers" => spec.helpers.get_or_insert_with(BTreeSet::new).extend(helper_ids(line)),
                "maps" => spec.maps.get_or_insert_with(BTreeMap::new).extend(map_entries(value)),
                _ => {}
            },
            _ => {}
        }
        if !key.is_empty() {
            last_key = match key {
                "helpers" => "helpers",
                "maps" => "maps",
                _ => "",
            };
        }
    }
    specs
}

fn check(prog: &ProgramMetadata, spec: &Spec) -> Vec<String> {
    let mut bad = Vec::new();
    let caps: BTreeSet<String> = prog.capabilities.iter().map(|c| c.name().to_owned()).collect();
    if let Some(want) = &spec.capabilities {
        if &caps != want {
            bad.push(format!("capabilities {caps:?}, spec says {want:?}"));
        }
    }
    let helpers: BTreeSet<u32> = prog.helpers.iter().map(|h| h.id).collect();
    if let Some(want) = &spec.helpers {
        if &helpers != want {
            bad.push(format!("helpers {helpers:?}, spec says {want:?}"));
        }
    }
    let kfuncs: BTreeSet<String> = prog.kfuncs.iter().cloned().collect();
    if let Some(want) = &spec.kfuncs {
        if &kfuncs != want {
            bad.push(format!("kfuncs {kfuncs:?}, spec says {want:?}"));
        }
    }
    let maps: BTreeMap<String, (bool, bool)> = prog.maps.iter().map(|m| (m.name.clone(), (m.read, m.write))).collect();
    if let Some(want) = &spec.maps {
        if &maps != want {
            bad.push(format!("maps {maps:?}, spec says {want:?}"));
        }
    }
    if let Some(want) = &spec.prog_type {
        if prog.prog_type.name() != want {
            bad.push(format!("prog_type {}, spec says {want}", prog.prog_type));
        }
    }
    if let Some(want) = &spec.attach_target {
        if prog.attach_target.as_deref().unwrap_or("") != want {
            bad.push(format!("attach_target {:?}, spec says {want}", prog.attach_target));
        }
    }
    // Every capability must come with the instruction that proves it.
    for c in &prog.capabilities {
        if prog.evidence.get(c).is_none_or(std::vec::Vec::is_empty) {
            bad.push(format!("{c} has no evidence"));
        }
    }
    bad
}

fn report_for(obj: &Path) -> ObjectReport {
    let rel = obj.strip_prefix(repo()).unwrap_or(obj).display().to_string();
    bpfgate::inspect(&rel, &std::fs::read(obj).expect("fixture readable"))
}

#[test]
fn fixtures_match_their_spec() {
    let sources = files_with(&fixtures(), &[".bpf.c"]);
    assert!(sources.len() >= 30, "fixtures missing: {}", sources.len());
    let mut failures = Vec::new();
    let mut checked = 0;
    for src in sources {
        let text = std::fs::read_to_string(&src).expect("source readable");
        let specs = parse_spec(&text);
        let obj = src.with_extension("o");
        let report = report_for(&obj);
        let fname = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        assert!(!specs.is_empty(), "{fname}: no `program NAME:` lines in its spec comment");
        if !report.errors.is_empty() {
            failures.push(format!("{fname}: errors {:?}", report.errors));
        }
        for (name, spec) in &specs {
            match report.programs.iter().find(|p| &p.name == name) {
                None => failures.push(format!("{fname}: program {name} not reported")),
                Some(prog) => {
                    checked += 1;
                    failures.extend(check(prog, spec).into_iter().map(|b| format!("{fname}: {name}: {b}")));
                }
            }
        }
        for p in &report.programs {
            if !specs.contains_key(&p.name) {
                failures.push(format!("{fname}: program {} is not in the spec", p.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 40, "only {checked} programs checked");
}

#[test]
fn fixtures_match_golden_reports() {
    let bless = std::env::var_os("BLESS").is_some();
    let golden_dir = fixtures().join("golden");
    let mut failures = Vec::new();
    for obj in files_with(&fixtures(), &[".bpf.o"]) {
        let report = report_for(&obj);
        let json = serde_json::to_string_pretty(&report).expect("serializes") + "\n";
        let stem = obj.file_name().map(|n| n.to_string_lossy().replace(".bpf.o", "")).unwrap_or_default();
        let golden = golden_dir.join(format!("{stem}.json"));
        if bless {
            std::fs::create_dir_all(&golden_dir).expect("golden dir");
            std::fs::write(&golden, &json).expect("golden written");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == json => {}
            Ok(_) => failures.push(format!("{stem}: report differs from {} (BLESS=1 to update)", golden.display())),
            Err(e) => failures.push(format!("{stem}: {}: {e} (BLESS=1 to create)", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spec_parser_reads_the_comment_format() {
    let specs = parse_spec(
        "/* x\n * Expected report:\n *   program a: section s, prog_type kprobe, attach_target f\n\
         *     capabilities: kernel_read, map_write\n *     helpers:      map_lookup_elem (1), probe_read_kernel (113)\n\
         *     maps:         m read true, write false\n *                   n read false, write true\n\
         *   program b: section t\n *     helpers, kfuncs, maps: none\n */",
    );
    let a = &specs["a"];
    assert_eq!(a.prog_type.as_deref(), Some("kprobe"));
    assert_eq!(a.attach_target.as_deref(), Some("f"));
    assert_eq!(a.capabilities.as_ref().map(std::collections::BTreeSet::len), Some(2));
    assert_eq!(a.helpers, Some([1, 113].into_iter().collect()));
    assert_eq!(a.maps.as_ref().map(std::collections::BTreeMap::len), Some(2));
    let b = &specs["b"];
    assert_eq!(b.helpers, Some(BTreeSet::new()));
    assert_eq!(b.maps, Some(BTreeMap::new()));
    assert_eq!(b.capabilities, None);
}
