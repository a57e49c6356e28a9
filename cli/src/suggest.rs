//! `bpfgate policy suggest --events EVENTS.jsonl [--policy CURRENT.yaml]`: audit2allow for BPF. From the
//! decisions `bpfgate enforce --json` printed (typically in audit mode), one rule per subject (exe, cgroup,
//! uid) admitting exactly what that subject was seen loading, with the narrowest constraints: the classes seen
//! (proved and conservative: the gate judges both), the program and attach types seen, the attach targets seen
//! (when every traced program named one), the largest instruction count seen, maps written only when the
//! subject created them and not pinned, plus the maps a map rule refused by name. Each rule is commented with
//! its evidence: the programs, what proved each class, the commands and pids.
//!
//! Without `--policy`, every load and program open in the events is admitted, in a new policy (`mode: audit`,
//! `default: deny`). With `--policy`, only subjects that policy did not allow (an event whose verdict is not
//! `allow`) get rules, from all of their events, placed before the policy's own rules (first match wins, so
//! they pre-empt what decided those events; `lint` names any rule they make unreachable).
//!
//! The output is parsed and, without `--policy`, linted before it is written: a suggestion that would not load
//! is an error, not a file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use bpfgate::policy::Policy;
use bpfgate::Capability;
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// JSON Lines from `bpfgate enforce --json`; lines not starting with `{` are skipped, so a journal dump
    /// (`journalctl -u bpfgate -o cat`) works as is.
    #[arg(long)]
    events: PathBuf,
    /// The policy in force when the events were recorded: only subjects it did not allow get rules, and the
    /// output is this policy with them first.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Where the cgroup v2 hierarchy is mounted, to name the events' cgroup ids.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Subjects by exe and uid only, not by cgroup (cgroups of sessions and pods change across restarts).
    #[arg(long)]
    without_cgroup: bool,
    /// Write the policy here instead of to stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// The fields of an `enforce --json` event (`bpfgate_gate::event::Event`) a suggestion uses.
#[derive(Debug, Deserialize)]
struct Seen {
    op: String,
    #[serde(default)]
    gate_object: bool,
    #[serde(default)]
    write: bool,
    tgid: u32,
    uid: u32,
    comm: String,
    exe: Option<String>,
    exe_dev: u64,
    exe_ino: u64,
    cgroup_id: u64,
    prog_type: String,
    attach_type: Option<String>,
    attach_target: Option<String>,
    name: String,
    insn_cnt: u32,
    #[serde(default)]
    classes: Vec<SeenClass>,
    class_bits: u32,
    maybe_class_bits: u32,
    map: Option<String>,
    rule_name: Option<String>,
    verdict: String,
}

#[derive(Debug, Deserialize)]
struct SeenClass {
    class: Capability,
    proved: bool,
    evidence: Option<serde_json::Value>,
}

fn evidence_text(e: &serde_json::Value) -> String {
    let s = |k: &str| e.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).unwrap_or_default();
    match e.get("kind").and_then(|k| k.as_str()) {
        Some("helper") => format!("helper {} {}", s("id"), s("name")),
        Some("kfunc") => format!("kfunc {}", s("name")),
        Some("unknown_kfunc") => format!("uncatalogued kfunc, btf id {}", s("btf_id")),
        Some("insn") => format!("insn {}", s("index")),
        _ => e.to_string(),
    }
}

/// Program types whose programs name an attach target (or are refused by a rule with `attach_targets`).
const TRACED: &[&str] = &["kprobe", "tracepoint", "raw_tracepoint", "raw_tracepoint_writable", "tracing", "lsm", "ext"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SubjectKey {
    exe: Option<String>,
    cgroup: Option<String>,
    uid: u32,
}

#[derive(Debug, Default)]
struct Evidence {
    events: usize,
    not_allowed: usize,
    comms: BTreeSet<String>,
    pids: BTreeSet<u32>,
    exe_unknown: Option<(u64, u64)>,
    cgroup_unknown: Option<u64>,
    /// Program descriptions with their counts.
    programs: BTreeMap<String, usize>,
    prog_types: BTreeSet<String>,
    attach_types: BTreeSet<String>,
    targets: BTreeSet<String>,
    traced_without_target: bool,
    max_insns: u32,
    classes: u32,
    /// Class name to what proved it (first seen).
    class_evidence: BTreeMap<&'static str, String>,
    named_maps: BTreeSet<String>,
    bad_map_names: BTreeSet<String>,
    rules_seen: BTreeSet<String>,
}

/// A suggested policy.
#[derive(Debug)]
pub struct Suggestion {
    pub text: String,
    pub rules: usize,
    /// Lint warnings of the result (only possible with `--policy`: rules the new ones make unreachable).
    pub warnings: Vec<String>,
}

/// Kernel map names: letters, digits, `_` and `.`, at most 15 bytes.
fn valid_map_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn quoted(s: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    serde_json::to_string(s).unwrap_or_default()
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

fn rule_name(key: &SubjectKey, taken: &mut BTreeSet<String>) -> String {
    let base = key
        .exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .or_else(|| key.cgroup.as_deref().and_then(|c| c.rsplit('/').find(|p| !p.is_empty())))
        .unwrap_or("uid");
    let mut base: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    base = format!("suggested-{base}-uid{}", key.uid);
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// Suggests a policy from `events` (JSON Lines). `current` is (file name, text) of the policy in force;
/// `cgroup_path` names a cgroup id (None: unknown, or cgroups not wanted).
pub fn suggest(
    events: &str,
    current: Option<(&str, &str)>,
    cgroup_path: &dyn Fn(u64) -> Option<String>,
) -> anyhow::Result<Suggestion> {
    let mut subjects: BTreeMap<SubjectKey, Evidence> = BTreeMap::new();
    for (i, line) in events.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let e: Seen = serde_json::from_str(line).with_context(|| format!("events line {}", i + 1))?;
        // Program facts come with loads, post-verification map decisions and other subjects' program opens;
        // writable map opens name a map. The gate's own objects are never admitted.
        let program = matches!(e.op.as_str(), "load" | "load_maps" | "prog_open");
        let map_open = e.op == "map_open" && e.write;
        if e.gate_object || !(program || map_open) {
            continue;
        }
        let key = SubjectKey { exe: e.exe.clone(), cgroup: cgroup_path(e.cgroup_id), uid: e.uid };
        let ev = subjects.entry(key.clone()).or_default();
        ev.events += 1;
        ev.not_allowed += usize::from(e.verdict != "allow");
        ev.comms.insert(e.comm.clone());
        ev.rules_seen.insert(e.rule_name.clone().map_or_else(|| "the default".to_owned(), |r| format!("rule `{r}`")));
        ev.pids.insert(e.tgid);
        if key.exe.is_none() {
            ev.exe_unknown = Some((e.exe_dev, e.exe_ino));
        }
        if key.cgroup.is_none() {
            ev.cgroup_unknown = Some(e.cgroup_id);
        }
        let map_refused = |name: &str, ev: &mut Evidence| {
            if valid_map_name(name) {
                ev.named_maps.insert(name.to_owned());
            } else {
                ev.bad_map_names.insert(name.to_owned());
            }
        };
        if map_open {
            if e.verdict != "allow" {
                map_refused(&e.name, ev);
            }
            continue;
        }
        if let Some(m) = e.map.as_deref().filter(|m| !m.is_empty()) {
            map_refused(m, ev);
        }
        ev.prog_types.insert(e.prog_type.clone());
        if let Some(a) = &e.attach_type {
            ev.attach_types.insert(a.clone());
        }
        match &e.attach_target {
            Some(t) => {
                ev.targets.insert(t.clone());
            }
            None if TRACED.contains(&e.prog_type.as_str()) => ev.traced_without_target = true,
            None => {}
        }
        ev.max_insns = ev.max_insns.max(e.insn_cnt);
        ev.classes |= e.class_bits | e.maybe_class_bits;
        let mut classes = Vec::new();
        for c in &e.classes {
            let what = c.evidence.as_ref().map(evidence_text);
            if let Some(w) = &what {
                ev.class_evidence.entry(c.class.name()).or_insert_with(|| format!("{w} in {}", e.name));
            }
            classes.push(format!("{}{}", c.class.name(), if c.proved { "" } else { "?" }));
        }
        let desc = format!(
            "{} {}{}{}: {} insns, {}",
            e.op,
            e.prog_type,
            e.attach_target.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
            if e.name.is_empty() { String::new() } else { format!(" `{}`", e.name) },
            e.insn_cnt,
            if classes.is_empty() { "no classes".to_owned() } else { classes.join(" ") }
        );
        *ev.programs.entry(desc).or_default() += 1;
    }

    let current_policy = match current {
        Some((file, text)) => Some(Policy::parse(file, text).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let mut taken: BTreeSet<String> =
        current_policy.iter().flat_map(|p| p.rules.iter().map(|r| r.name.clone())).collect();
    let mut rules = String::new();
    let mut count = 0;
    for (key, ev) in &subjects {
        // With a policy in force, only subjects it did not allow need a rule.
        if current.is_some() && ev.not_allowed == 0 {
            continue;
        }
        if ev.prog_types.is_empty() && ev.named_maps.is_empty() {
            continue;
        }
        count += 1;
        rules.push_str(&rule_yaml(key, ev, &mut taken));
    }

    let text = match current {
        None => format!(
            "# Suggested by `bpfgate policy suggest` from {} subjects' events: each rule admits exactly what its\n\
             # subject was seen doing. Review it (a rule admits only the programs seen; a new program with one more\n\
             # class, another type or more instructions is denied), then set `mode: enforce`.\n\
             version: 1\nmode: audit\ndefault: deny\n\nrules:{}{rules}",
            count,
            if rules.is_empty() { " []\n" } else { "\n" }
        ),
        Some((_, text)) => insert_rules(text, &rules)?,
    };
    let file = current.map_or("suggested.yaml", |(f, _)| f);
    let policy = Policy::parse(file, &text).map_err(|e| anyhow::anyhow!("the suggestion does not parse:\n{e}"))?;
    let warnings: Vec<String> = policy.lint().iter().map(ToString::to_string).collect();
    if current.is_none() && !warnings.is_empty() {
        bail!("the suggestion does not lint clean:\n{}", warnings.join("\n"));
    }
    Ok(Suggestion { text, rules: count, warnings })
}

fn rule_yaml(key: &SubjectKey, ev: &Evidence, taken: &mut BTreeSet<String>) -> String {
    let mut y = String::new();
    let pids: Vec<String> = ev.pids.iter().take(8).map(u32::to_string).collect();
    let _ = writeln!(
        y,
        "  # Seen: {} events ({} not allowed), commands {}, pids {}{}.",
        ev.events,
        ev.not_allowed,
        ev.comms.iter().cloned().collect::<Vec<_>>().join(", "),
        pids.join(", "),
        if ev.pids.len() > 8 { ", ..." } else { "" }
    );
    let _ = writeln!(y, "  # Decided by: {}.", ev.rules_seen.iter().cloned().collect::<Vec<_>>().join(", "));
    for (p, n) in &ev.programs {
        let _ = writeln!(y, "  #   {p}{}", if *n > 1 { format!(" (x{n})") } else { String::new() });
    }
    if let Some((dev, ino)) = ev.exe_unknown {
        let _ = writeln!(
            y,
            "  # The executable's path was not readable (/proc/PID/exe): device {dev:#x} inode {ino}; add `exe:`."
        );
    }
    if let Some(id) = ev.cgroup_unknown.filter(|_| key.cgroup.is_none()) {
        let _ = writeln!(y, "  # cgroup id {id} was not named (not found, or --without-cgroup).");
    }
    if key.exe.is_none() && key.cgroup.is_none() {
        let _ = writeln!(y, "  # WEAK: a uid alone admits every process of that uid.");
    }
    let _ = writeln!(y, "  - name: {}", rule_name(key, taken));
    let _ = writeln!(y, "    subject:");
    if let Some(exe) = &key.exe {
        let _ = writeln!(y, "      exe: {}", quoted(exe));
    }
    if let Some(cg) = &key.cgroup {
        let _ = writeln!(y, "      cgroup: {}", quoted(cg));
    }
    let _ = writeln!(y, "      uid: {}", key.uid);
    let classes: Vec<Capability> = Capability::ALL.into_iter().filter(|c| ev.classes & c.bit() != 0).collect();
    let _ = writeln!(y, "    capabilities:");
    for c in &classes {
        if let Some(w) = ev.class_evidence.get(c.name()) {
            let _ = writeln!(y, "      # {}: {w}", c.name());
        }
    }
    let _ = writeln!(y, "      allow: {}", list(classes.iter().map(|c| c.name().to_owned())));
    if !ev.prog_types.is_empty() {
        let _ = writeln!(y, "    prog_types: {}", list(ev.prog_types.iter().cloned()));
    }
    if !ev.attach_types.is_empty() {
        let _ = writeln!(y, "    attach_types: {}", list(ev.attach_types.iter().cloned()));
    }
    if !ev.targets.is_empty() {
        if ev.traced_without_target {
            let _ = writeln!(
                y,
                "    # No attach_targets: some programs named no target at load (kprobe, tracepoint), which a rule\n    \
                 # with attach_targets refuses. Seen targets: {}",
                ev.targets.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        } else {
            let targets = ev.targets.iter().map(|t| {
                // Patterns hold 64 bytes; a longer name is admitted by its prefix.
                if t.len() > 64 {
                    let mut end = 63;
                    while !t.is_char_boundary(end) {
                        end -= 1;
                    }
                    quoted(&format!("{}*", &t[..end]))
                } else {
                    quoted(t)
                }
            });
            let _ = writeln!(y, "    attach_targets: {}", list(targets));
        }
    }
    if ev.max_insns > 0 {
        let _ = writeln!(y, "    max_insns: {}", ev.max_insns);
    }
    let _ = writeln!(y, "    maps:");
    let _ = writeln!(y, "      write: own");
    let _ = writeln!(y, "      pinned: deny");
    if !ev.named_maps.is_empty() {
        let _ = writeln!(
            y,
            "      # Maps a map rule refused (load_maps, map_open events): written though not own or pinned."
        );
        let _ = writeln!(y, "      named: {}", list(ev.named_maps.iter().map(|m| quoted(m))));
    }
    for m in &ev.bad_map_names {
        let _ = writeln!(y, "      # Refused map {} cannot be named in a policy (kernel map name rules).", quoted(m));
    }
    y
}

/// `text` with `rules` (YAML list items indented by two) inserted as the first items of its `rules:` list,
/// re-indented to the list's own indentation.
fn insert_rules(text: &str, rules: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at =
        lines.iter().position(|l| l.trim_end() == "rules:").context("the policy has no top-level `rules:` line")?;
    let indent =
        lines[at + 1..].iter().find(|l| l.trim_start().starts_with("- ")).map_or(2, |l| l.len() - l.trim_start().len());
    let mut out = String::new();
    for l in &lines[..=at] {
        out.push_str(l);
        out.push('\n');
    }
    for l in rules.lines() {
        let rest = l.strip_prefix("  ").unwrap_or(l);
        let _ = writeln!(out, "{}{rest}", " ".repeat(indent));
    }
    for l in &lines[at + 1..] {
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

/// cgroup ids (directory inode numbers) to paths from the root, for every cgroup under `root`.
fn cgroup_paths(root: &Path) -> HashMap<u64, String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    while let Some((dir, path)) = stack.pop() {
        if let Ok(md) = std::fs::metadata(&dir) {
            out.insert(md.ino(), path.clone());
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                stack.push((e.path(), child));
            }
        }
    }
    out
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let events = std::fs::read_to_string(&args.events).with_context(|| format!("reading {}", args.events.display()))?;
    let current = match &args.policy {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        None => None,
    };
    let cgroups = if args.without_cgroup { HashMap::new() } else { cgroup_paths(&args.cgroup_root) };
    // The root cgroup names no subject.
    let lookup = |id: u64| cgroups.get(&id).filter(|p| p.as_str() != "/").cloned();
    let s = suggest(&events, current.as_ref().map(|(f, t)| (f.as_str(), t.as_str())), &lookup)?;
    match &args.output {
        Some(path) => std::fs::write(path, &s.text).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().write_all(s.text.as_bytes())?,
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "bpfgate: {} rules suggested", s.rules);
    for w in &s.warnings {
        let _ = writeln!(err, "bpfgate: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use bpfgate::metadata::{AttachType, ProgType};
    use bpfgate::policy::compiled::{self, ExeKey, KernelMap, KernelProgram, KernelSubject, Resolver};
    use bpfgate::policy::{reason_bits, Decision};
    use bpfgate_gate::event::{self, Event, Names, RawEvent};

    use super::*;

    /// A load as the gate reports it, through the real event type's JSON (so the shape is event.rs's).
    struct Load {
        op: u32,
        exe: &'static str,
        dev: u64,
        ino: u64,
        cgroup_id: u64,
        uid: u32,
        prog_type: &'static str,
        attach_type: Option<&'static str>,
        target: Option<&'static str>,
        name: &'static str,
        insns: u32,
        proved: &'static [Capability],
        maybe: &'static [Capability],
        map: Option<&'static str>,
        verdict: u8,
    }

    fn fill(dst: &mut [u8], s: &str) {
        dst[..s.len()].copy_from_slice(s.as_bytes());
    }

    fn json(l: &Load) -> String {
        let mut raw = event::parse(&[0u8; RawEvent::SIZE]).unwrap();
        raw.op = l.op;
        // No such process: the event's exe is set below, as the daemon would have read it.
        raw.tgid = u32::MAX - 1;
        raw.pid = raw.tgid;
        raw.uid = l.uid;
        raw.exe_dev = l.dev;
        raw.exe_ino = l.ino;
        raw.cgroup_id = l.cgroup_id;
        raw.prog_type = ProgType::from_str(l.prog_type).unwrap().number();
        raw.attach_type = l.attach_type.map_or(0, |a| AttachType::from_str(a).unwrap().number());
        if let Some(t) = l.target {
            raw.flags |= event::flags::TARGET;
            fill(&mut raw.target, t);
        }
        fill(&mut raw.name, l.name);
        fill(&mut raw.comm, l.exe.rsplit('/').next().unwrap());
        if let Some(m) = l.map {
            fill(&mut raw.map_name, m);
        }
        raw.insn_cnt = l.insns;
        raw.classes = l.proved.iter().fold(0, |b, c| b | c.bit());
        raw.maybe_classes = l.maybe.iter().fold(0, |b, c| b | c.bit());
        for c in l.proved {
            raw.evidence[*c as usize] = event::evidence::INSN | 7;
        }
        raw.verdict = l.verdict;
        raw.rule = event::RULE_DEFAULT;
        let mut v = serde_json::to_value(Event::from_raw(&raw, &Names::default())).unwrap();
        assert!(v.get("exe").is_some(), "event.rs's JSON has `exe`");
        v["exe"] = serde_json::Value::String(l.exe.to_owned());
        v.to_string()
    }

    const BPFTRACE: &str = "/usr/bin/bpftrace";
    const AGENT: &str = "/usr/sbin/agent";

    fn loads() -> Vec<Load> {
        use Capability::*;
        let base = Load {
            op: event::OP_PROG_LOAD,
            exe: BPFTRACE,
            dev: 0x800001,
            ino: 42,
            cgroup_id: 77,
            uid: 0,
            prog_type: "kprobe",
            attach_type: None,
            target: None,
            name: "kprobe_open",
            insns: 120,
            proved: &[KernelRead],
            maybe: &[MapWrite],
            map: None,
            verdict: event::VERDICT_AUDIT,
        };
        vec![
            Load { ..base },
            Load {
                prog_type: "tracing",
                attach_type: Some("trace_fentry"),
                target: Some("vfs_read"),
                name: "fentry_read",
                insns: 300,
                proved: &[KernelRead, MapWrite],
                maybe: &[],
                ..base
            },
            Load {
                exe: AGENT,
                dev: 0x800001,
                ino: 43,
                cgroup_id: 99,
                uid: 1000,
                prog_type: "sched_cls",
                name: "tc_rewrite",
                insns: 50,
                proved: &[PacketWrite, MapWrite],
                maybe: &[],
                ..base
            },
            Load {
                op: event::OP_PROG_MAPS,
                exe: AGENT,
                dev: 0x800001,
                ino: 43,
                cgroup_id: 99,
                uid: 1000,
                prog_type: "sched_cls",
                name: "tc_rewrite",
                insns: 50,
                proved: &[PacketWrite, MapWrite],
                maybe: &[],
                map: Some("shared_map"),
                ..base
            },
        ]
    }

    fn events_text(loads: &[Load]) -> String {
        let mut text = String::from("bpfgate: enforcing /etc/bpfgate/policy.yaml (generation 1)\n");
        for l in loads {
            text.push_str(&json(l));
            text.push('\n');
        }
        // Ignored: map creations and the gate's own objects.
        text.push_str(&json(&Load { op: event::OP_MAP_CREATE, ..loads[0].clone_load() }));
        text.push('\n');
        text
    }

    impl Load {
        fn clone_load(&self) -> Load {
            Load { ..*self }
        }
    }

    fn cgroups(id: u64) -> Option<String> {
        match id {
            77 => Some("/system.slice/bpftrace.service".into()),
            _ => None,
        }
    }

    struct Host;
    impl Resolver for Host {
        fn exe(&self, path: &str) -> Option<ExeKey> {
            match path {
                BPFTRACE => Some(ExeKey { dev: 0x800001, ino: 42 }),
                AGENT => Some(ExeKey { dev: 0x800001, ino: 43 }),
                _ => None,
            }
        }
        fn cgroup(&self, path: &str) -> Option<u64> {
            match path {
                "/" => Some(1),
                "/system.slice" => Some(5),
                "/system.slice/bpftrace.service" => Some(77),
                _ => None,
            }
        }
    }

    fn subject(l: &Load) -> KernelSubject {
        let cgroup_ancestors = if l.cgroup_id == 77 { vec![1, 5, 77] } else { vec![1, l.cgroup_id] };
        KernelSubject { exe: Some(ExeKey { dev: l.dev, ino: l.ino }), cgroup_ancestors, uid: Some(l.uid) }
    }

    fn program(l: &Load, extra: u32) -> KernelProgram {
        let classes = l.proved.iter().chain(l.maybe).fold(extra, |b, c| b | c.bit());
        // A program writing maps writes its own map (and the agent the shared one a map rule refused).
        let mut written_maps = Vec::new();
        if classes & Capability::MapWrite.bit() != 0 {
            written_maps.push(KernelMap { name: "own_map".into(), own: true, pinned: false });
            if l.exe == AGENT {
                written_maps.push(KernelMap { name: "shared_map".into(), own: false, pinned: true });
            }
        }
        KernelProgram {
            prog_type: ProgType::from_str(l.prog_type).unwrap().number(),
            attach_type: l.attach_type.map(|a| AttachType::from_str(a).unwrap().number()),
            attach_target: l.target.map(str::to_owned),
            insn_cnt: l.insns,
            classes,
            written_maps,
            unattributed_map_write: false,
        }
    }

    fn enforced_tables(text: &str) -> compiled::KernelTables {
        let text = text.replace("\nmode: audit\n", "\nmode: enforce\n");
        let policy = Policy::parse("suggested.yaml", &text).unwrap();
        let resolved = compiled::compile(&policy, 1).unwrap().resolve(&Host);
        assert!(resolved.unresolved.is_empty(), "{:?}", resolved.unresolved);
        resolved.tables
    }

    #[test]
    fn suggestion_parses_lints_clean_admits_what_was_seen_and_no_more() {
        let loads = loads();
        let s = suggest(&events_text(&loads), None, &cgroups).unwrap();
        assert_eq!(s.rules, 2, "{}", s.text);
        let policy = Policy::parse("suggested.yaml", &s.text).unwrap();
        assert!(policy.lint().is_empty());
        assert!(s.text.contains("cgroup: \"/system.slice/bpftrace.service\""), "{}", s.text);
        assert!(s.text.contains("named: [\"shared_map\"]"), "{}", s.text);
        // kprobe programs name no target at load: a rule with attach_targets would refuse them.
        assert!(!s.text.contains("    attach_targets: ["), "{}", s.text);
        let tables = enforced_tables(&s.text);
        for l in &loads {
            let v = compiled::evaluate(&tables, &subject(l), &program(l, 0));
            assert_eq!(v.decision, Decision::Allow, "{} {}: {v:?}\n{}", l.exe, l.name, s.text);
            // One more class than seen is denied, by the capabilities constraint.
            let v = compiled::evaluate(&tables, &subject(l), &program(l, Capability::SendSignal.bit()));
            assert_eq!(v.decision, Decision::Deny, "{} {} with send_signal", l.exe, l.name);
            assert_ne!(v.reasons & reason_bits::CLASS, 0);
            // So is one more instruction than the largest seen.
            let mut bigger = program(l, 0);
            bigger.insn_cnt = 301;
            assert_eq!(compiled::evaluate(&tables, &subject(l), &bigger).decision, Decision::Deny);
        }
        // Another executable under the same uid and cgroup is not admitted.
        let mut other = subject(&loads[0]);
        other.exe = Some(ExeKey { dev: 0x800001, ino: 44 });
        assert_eq!(compiled::evaluate(&tables, &other, &program(&loads[0], 0)).decision, Decision::Deny);
    }

    #[test]
    fn targets_are_listed_when_every_traced_program_names_one() {
        let loads = loads();
        let s = suggest(&events_text(&loads[1..2]), None, &cgroups).unwrap();
        assert!(s.text.contains("attach_targets: [\"vfs_read\"]"), "{}", s.text);
        assert!(s.text.contains("attach_types: [trace_fentry]"), "{}", s.text);
        let tables = enforced_tables(&s.text);
        let mut elsewhere = program(&loads[1], 0);
        elsewhere.attach_target = Some("vfs_write".into());
        let v = compiled::evaluate(&tables, &subject(&loads[1]), &elsewhere);
        assert_eq!(v.decision, Decision::Deny);
        assert_ne!(v.reasons & reason_bits::ATTACH_TARGET, 0);
        assert_eq!(compiled::evaluate(&tables, &subject(&loads[1]), &program(&loads[1], 0)).decision, Decision::Allow);
    }

    #[test]
    fn with_the_policy_in_force_only_what_it_did_not_allow_gets_rules_first() {
        let mut loads = loads();
        // The agent was allowed: no rule for it.
        for l in loads.iter_mut().filter(|l| l.exe == AGENT) {
            l.verdict = event::VERDICT_ALLOW;
        }
        let current =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy.yaml")).unwrap();
        let s = suggest(&events_text(&loads), Some(("policy.yaml", &current)), &cgroups).unwrap();
        assert_eq!(s.rules, 1, "{}", s.text);
        let policy = Policy::parse("policy.yaml", &s.text).unwrap();
        let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["suggested-bpftrace-uid0", "systemd"]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(s.text.starts_with(&current[..current.find("rules:").unwrap()]), "the header is kept");
    }

    #[test]
    fn an_unreadable_exe_is_said_and_a_uid_alone_is_flagged_weak() {
        let l = Load { exe: "", ..loads()[0].clone_load() };
        let text = json(&l).replace("\"exe\":\"\"", "\"exe\":null");
        let s = suggest(&text, None, &|_| None).unwrap();
        assert!(s.text.contains("device 0x800001 inode 42"), "{}", s.text);
        assert!(s.text.contains("# WEAK: a uid alone"), "{}", s.text);
    }

    #[test]
    fn reads_a_journal_dump_and_rejects_broken_json() {
        assert_eq!(suggest("-- Boot abc --\nbpfgate: stopped\n", None, &|_| None).unwrap().rules, 0);
        assert!(suggest("{\"op\": \"load\"\n", None, &|_| None).is_err());
    }
}
