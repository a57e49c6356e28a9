//! `bpfgate check`: decide, per program, whether a policy lets a subject load it (issue 3).
//!
//! Exit codes: 0 every program allowed (audits count as allowed), 1 a program was denied, 2 an error (bad
//! policy, unreadable file, or a program the analysis could not finish: it is never silently allowed).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bpfgate::policy::{Decision, Policy, Subject, Verdict};
use serde::Serialize;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// ALLOW, DENY or AUDIT per program, with reasons in plain words.
    Text,
    /// One JSON document with every verdict and its evidence.
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (YAML, see docs/policy.md).
    #[arg(long)]
    policy: PathBuf,
    /// Absolute path of the executable that would load the programs.
    #[arg(long, value_name = "PATH")]
    exe: Option<String>,
    /// cgroup v2 path of the loading process, from the cgroup root (`/system.slice/foo.service`).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// Real uid of the loading process.
    #[arg(long, value_name = "N")]
    uid: Option<u32>,
    /// Judge each program as the in-kernel gate will: by the classes it counts (kernel_read, map_write and
    /// packet_write conservatively), with no attach target for kprobes and tracepoints, and every writable map
    /// it uses as written when it counts map_write. Without it, by the library's exact analysis.
    #[arg(long)]
    gate: bool,
    /// The target kernel's BTF (`/sys/kernel/btf/vmlinux`, or a raw BTF file of another kernel): judge each
    /// object as libbpf will load it there, CO-RE relocations applied and what fails poisoned. Without it,
    /// CO-RE programs are judged as compiled and the report says so.
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
    /// A map the loader does not create (`bpf_map__set_autocreate(map, false)`, e.g. libbpf-tools' `heap` when
    /// the kernel has ring buffers): its loads are poisoned as libbpf poisons them. Repeat for several.
    #[arg(long = "no-create", value_name = "MAP")]
    no_create: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The attach target the loader sets at run time for a program (libbpf's `bpf_program__set_attach_target`,
    /// cilium/ebpf's `AttachTo`): `dummy_kprobe=vfs_read` judges bcc's placeholder as attached to vfs_read.
    /// PROGRAM is the program's name in the report or the kernel's (15-byte) name. Repeatable.
    #[arg(long, value_name = "PROGRAM=TARGET", value_parser = parse_assign)]
    attach_target: Vec<(String, String)>,
    /// The program type the loader sets at run time (`bpf_program__set_type`, `tc ... bpf obj F sec S` loads
    /// `sched_cls`): `ingress=sched_cls`. Repeatable.
    #[arg(long, value_name = "PROGRAM=TYPE", value_parser = parse_assign)]
    prog_type: Vec<(String, String)>,
    /// The expected attach type the loader sets at run time (`bpf_program__set_expected_attach_type`):
    /// `handler=trace_fentry`. Repeatable.
    #[arg(long, value_name = "PROGRAM=TYPE", value_parser = parse_assign)]
    attach_type: Vec<(String, String)>,
    /// BPF ELF objects to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    policy: String,
    subject: &'a Subject,
    files: Vec<JsonFile>,
}

#[derive(Serialize)]
struct JsonFile {
    file: String,
    errors: Vec<String>,
    programs: Vec<JsonProgram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_rewrites: Option<bpfgate::metadata::LoadRewrites>,
}

#[derive(Serialize)]
struct JsonProgram {
    name: String,
    kernel_name: String,
    section: String,
    prog_type: String,
    attach_type: Option<String>,
    attach_target: Option<String>,
    /// Load overrides applied and other notes of the program's report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    verdict: Verdict,
}

fn parse_assign(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((p, v)) if !p.is_empty() && !v.is_empty() => Ok((p.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}`: expected PROGRAM=VALUE")),
    }
}

/// The overrides the flags give, one per program and field.
fn overrides(args: &Args) -> anyhow::Result<Vec<bpfgate::LoadOverride>> {
    let mut out = Vec::new();
    let new = |program: &str| bpfgate::LoadOverride { program: program.to_owned(), ..Default::default() };
    for (p, t) in &args.attach_target {
        out.push(bpfgate::LoadOverride { attach_target: Some(t.clone()), ..new(p) });
    }
    for (p, t) in &args.prog_type {
        let t = t.parse().map_err(|e: String| anyhow::anyhow!("--prog-type {p}={t}: {e}"))?;
        out.push(bpfgate::LoadOverride { prog_type: Some(t), ..new(p) });
    }
    for (p, t) in &args.attach_type {
        let t = t.parse().map_err(|e: String| anyhow::anyhow!("--attach-type {p}={t}: {e}"))?;
        out.push(bpfgate::LoadOverride { attach_type: Some(t), ..new(p) });
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = overrides(&args)?;
    for (flag, v) in [("--exe", &args.exe), ("--cgroup", &args.cgroup)] {
        if v.as_deref().is_some_and(|p| !p.starts_with('/')) {
            anyhow::bail!("{flag} must be an absolute path");
        }
    }
    let policy_name = args.policy.display().to_string();
    let text = std::fs::read_to_string(&args.policy).with_context(|| format!("cannot read {policy_name}"))?;
    let policy = match Policy::parse(&policy_name, &text) {
        Ok(p) => p,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    for w in policy.lint() {
        eprintln!("{w}");
    }
    let target = crate::inspect::target_btf(args.btf.as_deref())?;
    let options = bpfgate::InspectOptions {
        target_btf: target.as_ref(),
        not_created: args.no_create.clone(),
        overrides,
        ..Default::default()
    };
    let subject = Subject { exe: args.exe.clone(), cgroup: args.cgroup.clone(), uid: args.uid };
    let (mut denied, mut failed) = (false, false);
    let mut files = Vec::new();
    let mut text_out = String::new();
    let mut buf = crate::readbuf::ReadBuf::default();
    for path in &args.files {
        let name = path.display().to_string();
        let report = match buf.read(path) {
            Ok(bytes) => bpfgate::inspect_with(&name, bytes, &options),
            Err(e) => {
                let mut r = bpfgate::inspect(&name, &[]);
                let message = format!("{name}: cannot read file: {e}");
                r.errors = vec![bpfgate::InspectError::new(&name, bpfgate::InspectErrorKind::Io, message)];
                r
            }
        };
        failed |= !report.errors.is_empty();
        let mut programs = Vec::new();
        for prog in &report.programs {
            let verdict = if args.gate {
                policy.evaluate(&subject, &bpfgate::kernel_view::judged(prog, &report.maps), &report.maps)
            } else {
                policy.evaluate(&subject, prog, &report.maps)
            };
            denied |= verdict.decision == Decision::Deny;
            // The kernel's name where it differs: what `bpftool prog` and the gate's events show.
            let kname = if prog.kernel_name != prog.name && !prog.kernel_name.is_empty() {
                format!(", kernel name {}", prog.kernel_name)
            } else {
                String::new()
            };
            let _ = writeln!(
                text_out,
                "{name}: {} ({}, {}{kname}): {}",
                prog.name,
                prog.section,
                prog.prog_type,
                verdict.to_string().replace('\n', "\n  ")
            );
            for note in &prog.notes {
                let _ = writeln!(text_out, "  note: {note}");
            }
            programs.push(JsonProgram {
                name: prog.name.clone(),
                kernel_name: prog.kernel_name.clone(),
                section: prog.section.clone(),
                prog_type: prog.prog_type.to_string(),
                attach_type: prog.attach_type.map(|a| a.to_string()),
                attach_target: prog.attach_target.clone(),
                notes: prog.notes.clone(),
                verdict,
            });
        }
        if let Some(note) = report.load_rewrites.as_ref().and_then(crate::inspect::load_note) {
            let _ = writeln!(text_out, "{name}: note: {note}");
        }
        if report.programs.is_empty() && report.errors.is_empty() {
            let _ = writeln!(text_out, "{name}: no programs");
        }
        for e in &report.errors {
            // A program that was not analyzed has no verdict: say so where the verdicts are.
            match args.format {
                Format::Text => {
                    let _ = writeln!(text_out, "ERROR {e}");
                }
                Format::Json => eprintln!("bpfgate: {e}"),
            }
        }
        files.push(JsonFile {
            file: name,
            errors: report.errors.iter().map(|e| e.message.clone()).collect(),
            programs,
            load_rewrites: report.load_rewrites.clone(),
        });
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => out.write_all(text_out.as_bytes())?,
        Format::Json => {
            let report = JsonReport { policy: policy_name, subject: &subject, files };
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
    }
    Ok(ExitCode::from(if failed {
        2
    } else if denied {
        1
    } else {
        0
    }))
}
