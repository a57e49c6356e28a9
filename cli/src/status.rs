//! `bpfgate status [--json]`: whether a gate is attached (fd-bound or persisted), on which hooks, the policy in
//! force (path, SHA-256, generation, when installed, executables that did not resolve), the decisions per rule
//! and action, and the events dropped. Reads the gate's maps read-only (`bpfgate_gate::status`), so it works
//! as well against a persisted gate whose daemon is gone. Needs root.
//!
//! Exit codes: 0 a gate is attached, 1 none is (none loaded, or its links are gone), 2 an error.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use bpfgate_gate::status::{self, Mode, RuleCounts, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object (docs/status.md) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let found = status::find().context("bpfgate status (reading the gate's maps needs root)")?;
    let attached = found.as_ref().is_some_and(|s| s.attached);
    let text = match (&found, args.json) {
        (Some(s), true) => serde_json::to_string_pretty(s)?,
        (None, true) => serde_json::to_string_pretty(&serde_json::json!({
            "schema_version": status::STATUS_SCHEMA_VERSION,
            "found": false,
            "attached": false,
        }))?,
        (Some(s), false) => render(s),
        (None, false) => "gate: none loaded\n".to_owned(),
    };
    print!("{text}");
    if args.json {
        println!();
    }
    Ok(if attached { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn render(s: &Status) -> String {
    let mut o = String::new();
    let mode = match s.mode {
        Mode::Persisted => format!("persisted in {}", s.pin_dir.as_deref().unwrap_or("?")),
        Mode::FdBound => "fd-bound: goes with its daemon".to_owned(),
    };
    let _ = writeln!(o, "gate: {} ({mode})", if s.attached { "attached" } else { "NOT attached" });
    let _ = writeln!(
        o,
        "daemon: pid {} {}",
        s.daemon.pid,
        if s.daemon.running { "running" } else { "not running (nobody reads events or reloads the policy)" }
    );
    let hooks: Vec<String> = s
        .hooks
        .iter()
        .map(|h| format!("{} (link {}{})", h.hook, h.link_id, if h.attached { "" } else { ", gone" }))
        .collect();
    let _ = writeln!(o, "hooks: {}", if hooks.is_empty() { "none".to_owned() } else { hooks.join(", ") });
    match &s.policy {
        Some(p) => {
            let _ = writeln!(
                o,
                "policy: {} (sha256 {}), generation {}, {} mode, installed {}",
                p.path.as_deref().unwrap_or("(not from a file)"),
                p.sha256.as_deref().unwrap_or("-"),
                p.generation,
                p.mode,
                p.loaded_at
            );
            if !p.unresolved.is_empty() {
                let _ = writeln!(o, "unresolved executables (their rules cannot match): {}", p.unresolved.join(", "));
            }
        }
        None => {
            let _ = writeln!(o, "policy: none installed");
        }
    }
    if let Some(p) = &s.policy {
        let _ = writeln!(o, "decisions of generation {} (since installed):", p.generation);
        table(&mut o, &s.rules);
    }
    if s.totals.iter().any(|t| !s.rules.contains(t)) {
        let _ = writeln!(o, "decisions since the daemon started (every generation, by rule name):");
        table(&mut o, &s.totals);
    }
    let _ = writeln!(o, "gate objects refused: {}", s.gate_objects_refused);
    let _ = writeln!(o, "dropped events: {}", s.dropped_events);
    if s.other_gates > 0 {
        let _ = writeln!(o, "warning: {} other gate(s) loaded", s.other_gates);
    }
    o
}

fn table(o: &mut String, rows: &[RuleCounts]) {
    let width = rows.iter().map(|r| r.rule.len()).max().unwrap_or(0).max(4);
    let _ = writeln!(
        o,
        "  {:width$}  {:>8} {:>8} {:>8}  {:>8} {:>8} {:>8}",
        "rule", "loads ok", "denied", "audited", "opens ok", "denied", "audited"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "  {:width$}  {:>8} {:>8} {:>8}  {:>8} {:>8} {:>8}",
            r.rule, r.loads.allowed, r.loads.denied, r.loads.audited, r.opens.allowed, r.opens.denied, r.opens.audited
        );
    }
}
