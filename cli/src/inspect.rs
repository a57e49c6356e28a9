//! `bpfgate inspect`: capability reports for BPF objects.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use bpfgate::metadata::{to_cbor, InspectError, InspectErrorKind, ObjectReport};
use bpfgate::Disassembly;

use crate::readbuf::ReadBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// A readable report per program.
    Text,
    /// One JSON object per file; with several files, one per line (JSON Lines).
    Json,
    /// One CBOR item per file, concatenated (a CBOR sequence, RFC 8742).
    Cbor,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Threads: for the files (read and analyzed ahead, reports written in argument order) and for the programs
    /// of a large object. 0: one per CPU it may run on (its affinity, as `nproc` counts). The reports are the same
    /// whatever the number.
    #[arg(long, short = 'j', default_value_t = 0)]
    jobs: usize,
    /// The target kernel's BTF (`/sys/kernel/btf/vmlinux` or a raw BTF file): report each object as libbpf will
    /// load it there, CO-RE relocations applied and what fails poisoned.
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,
    /// A map the loader does not create: its loads are poisoned as libbpf poisons them. Repeat for several.
    #[arg(long = "no-create", value_name = "MAP")]
    no_create: Vec<String>,
    /// BPF ELF objects to inspect.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One file's report, as a worker made it.
struct Inspected {
    report: ObjectReport,
    obj: Option<Disassembly>,
    /// Larger than STREAM_ABOVE: streamed rather than collected.
    large: bool,
}

/// Reads and inspects one file; `buf` is the worker's read buffer.
fn inspect_one(path: &Path, format: Format, options: &bpfgate::InspectOptions<'_>, buf: &mut ReadBuf) -> Inspected {
    // Borrowed for UTF-8 paths (no allocation); the same text as `display`, lossy otherwise.
    let name = path.to_string_lossy();
    let read = buf.read(path);
    let large = read.as_ref().is_ok_and(|bytes| bytes.len() > STREAM_ABOVE);
    // The text report disassembles evidence, so it keeps the parsed object instead of parsing twice.
    let (report, obj) = match read {
        Ok(bytes) if matches!(format, Format::Text) => {
            let (report, dis) = bpfgate::inspect_disassembled_with(&name, bytes, options);
            (report, Some(dis))
        }
        Ok(bytes) => (bpfgate::inspect_with(&name, bytes, options), None),
        Err(e) => {
            let mut r = bpfgate::inspect(&name, &[]);
            r.errors = vec![InspectError::new(&name, InspectErrorKind::Io, format!("{name}: cannot read file: {e}"))];
            (r, None)
        }
    };
    Inspected { report, obj, large }
}

/// Reports of the files in argument order: on the calling thread, or with `jobs` workers, worker `w` taking files
/// `w`, `w + jobs`, ... and handing each report over a channel of two, which the caller drains in turn: the
/// order is the arguments', and at most a few reports per worker wait in memory.
fn for_each_report(
    files: &[PathBuf],
    format: Format,
    options: &bpfgate::InspectOptions<'_>,
    jobs: usize,
    mut each: impl FnMut(Inspected) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let jobs = jobs.min(files.len());
    if jobs <= 1 {
        // One read buffer for every file.
        let mut buf = ReadBuf::default();
        for path in files {
            each(inspect_one(path, format, options, &mut buf))?;
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        let here = crate::spread::here();
        // Started last to first, each followed by a yield so that it runs, and moves itself (`spread`), before
        // the next starts. Worker 0, started last, stays on this thread's CPU: this thread only waits for reports.
        let mut inboxes: Vec<_> = (0..jobs)
            .rev()
            .map(|w| {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                s.spawn(move || {
                    crate::spread::start(here, w);
                    let mut buf = ReadBuf::default();
                    for path in files.iter().skip(w).step_by(jobs) {
                        // The receiver is gone only when writing failed; then there is nothing left to do.
                        if tx.send(inspect_one(path, format, options, &mut buf)).is_err() {
                            break;
                        }
                    }
                });
                std::thread::yield_now();
                rx
            })
            .collect();
        inboxes.reverse();
        for i in 0..files.len() {
            match inboxes[i % jobs].recv() {
                Ok(one) => each(one)?,
                Err(_) => anyhow::bail!("a worker inspecting {} stopped", files[i].display()),
            }
        }
        Ok(())
    })
}

/// The kernel BTF `--btf` names, read and indexed once for every file.
pub fn target_btf(path: Option<&Path>) -> anyhow::Result<Option<bpfgate::TargetBtf>> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(bpfgate::TargetBtf::parse(&bytes).with_context(|| format!("{}", path.display()))?))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = target_btf(args.btf.as_deref())?;
    let options = bpfgate::InspectOptions {
        target_btf: target.as_ref(),
        not_created: args.no_create.clone(),
        ..Default::default()
    };
    let mut failed = false;
    let mut stdout = std::io::stdout().lock();
    // The reports of small objects are serialized into a Vec, written out every FLUSH_AT bytes: serde_json's many
    // small writes cost less into a Vec than through `BufWriter` (docs/benchmarks.md). A large object's report,
    // whose size has no useful bound, is streamed through a `BufWriter` instead of held whole.
    let mut out: Vec<u8> = Vec::with_capacity(2 * FLUSH_AT);
    let jobs = match args.jobs {
        0 => crate::spread::cpus(),
        n => n,
    };
    bpfgate::unstable::analysis::set_threads(jobs);
    let pretty = args.files.len() == 1;
    for_each_report(&args.files, args.format, &options, jobs, |Inspected { report, obj, large }| {
        failed |= !report.errors.is_empty();
        if large {
            stdout.write_all(&out)?;
            out.clear();
            let mut streamed = std::io::BufWriter::new(&mut stdout);
            write_report(&mut streamed, args.format, pretty, &report, obj.as_ref())?;
            streamed.flush()?;
        } else {
            write_report(&mut out, args.format, pretty, &report, obj.as_ref())?;
            if out.len() >= FLUSH_AT {
                stdout.write_all(&out)?;
                out.clear();
            }
        }
        // The text report shows its errors; the other formats say them on stderr, in one write per file.
        if !matches!(args.format, Format::Text) && !report.errors.is_empty() {
            let mut lines = String::new();
            for e in &report.errors {
                let _ = writeln!(lines, "bpfgate: {e}");
            }
            let _ = std::io::stderr().write_all(lines.as_bytes());
        }
        Ok(())
    })?;
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn write_report(
    out: &mut impl std::io::Write,
    format: Format,
    pretty: bool,
    report: &ObjectReport,
    obj: Option<&Disassembly>,
) -> anyhow::Result<()> {
    match format {
        Format::Json if pretty => serde_json::to_writer_pretty(&mut *out, report)?,
        Format::Json => serde_json::to_writer(&mut *out, report)?,
        Format::Cbor => out.write_all(&to_cbor(report).context("encoding the report")?)?,
        Format::Text => out.write_all(text_report(report, obj).as_bytes())?,
    }
    if matches!(format, Format::Json) {
        writeln!(out)?;
    }
    Ok(())
}

/// Output is written once this much has collected (`BufWriter`'s default capacity). Not more: each new page of
/// the buffer costs a page fault.
const FLUSH_AT: usize = 8 * 1024;

/// Objects larger than this have their report streamed rather than held whole in memory.
const STREAM_ABOVE: usize = 256 * 1024;

fn text_report(report: &ObjectReport, obj: Option<&Disassembly>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", report.file);
    if let Some(l) = &report.license {
        let _ = writeln!(s, "  license: {l}");
    }
    for m in &report.maps {
        let _ = writeln!(
            s,
            "  map {}: type {} key {} value {} entries {}{}{}{}",
            m.name,
            m.map_type,
            m.key_size,
            m.value_size,
            m.max_entries,
            match m.pinning {
                0 => String::new(),
                1 => " pinned".into(),
                2 => " pinned (object namespace)".into(),
                p => format!(" pinned (iproute2 pinning {p})"),
            },
            if m.read_only { " read-only" } else { "" },
            m.inner_map.as_deref().map(|i| format!(" inner map {i}")).unwrap_or_default()
        );
    }
    if let Some(note) = report.load_rewrites.as_ref().and_then(load_note) {
        let _ = writeln!(s, "  note: {note}");
    }
    for p in &report.programs {
        let _ = writeln!(s, "\n  program {} (section {})", p.name, p.section);
        if p.kernel_name != p.name {
            let kname = if p.kernel_name.is_empty() { "none (iproute2 passes no name)" } else { &p.kernel_name };
            let _ = writeln!(s, "    kernel name: {kname}");
        }
        if !p.loaders.is_empty() {
            let names: Vec<&str> = p.loaders.iter().map(|l| l.name()).collect();
            let _ = writeln!(s, "    loaded by: {}", names.join(", "));
        }
        let _ = write!(s, "    type {}", p.prog_type);
        if let Some(a) = p.attach_type {
            let _ = write!(s, ", attach {a}");
        }
        if let Some(t) = &p.attach_target {
            let _ = write!(s, ", target {t}");
        }
        if p.sleepable {
            let _ = write!(s, ", sleepable");
        }
        let _ = writeln!(s, ", {} instructions", p.insn_count);
        if let Some(r) = &p.unspec_reason {
            let _ = writeln!(s, "    unspec: {r}");
        }
        for n in &p.notes {
            let _ = writeln!(s, "    note: {n}");
        }
        if !p.helpers.is_empty() {
            let names: Vec<String> = p.helpers.iter().map(|h| format!("bpf_{}#{}", h.name, h.id)).collect();
            let _ = writeln!(s, "    helpers: {}", names.join(", "));
        }
        if !p.kfuncs.is_empty() {
            let _ = writeln!(s, "    kfuncs: {}", p.kfuncs.join(", "));
        }
        for sub in &p.subprograms {
            let _ =
                writeln!(s, "    calls {} ({}+{}) at insn {}", sub.name, sub.section, sub.section_offset, sub.start);
        }
        for sub in &p.unreached_subprograms {
            let _ = writeln!(
                s,
                "    unreached {} ({}+{}) at insn {}: linked in, called only from dead code, not analyzed",
                sub.name, sub.section, sub.section_offset, sub.start
            );
        }
        if !p.maps.is_empty() {
            let maps: Vec<String> = p
                .maps
                .iter()
                .map(|m| format!("{} ({}{})", m.name, if m.read { "r" } else { "-" }, if m.write { "w" } else { "-" }))
                .collect();
            let _ = writeln!(s, "    maps: {}", maps.join(", "));
        }
        if p.capabilities.is_empty() {
            let _ = writeln!(s, "    capabilities: none");
        } else {
            let _ = writeln!(s, "    capabilities:");
        }
        for (cap, insns) in &p.evidence {
            let first = insns.first().copied().unwrap_or(0);
            let (sec, off) = p.locate(first);
            let dis = obj.and_then(|o| o.insn(sec, off as usize)).unwrap_or_default();
            let more = if insns.len() > 1 { format!(" (and {} more)", insns.len() - 1) } else { String::new() };
            let _ = writeln!(s, "      {:<16} insn {first}: {dis}{more}", cap.name());
        }
        // What the in-kernel gate will count beyond that (bpfgate::kernel_view).
        for (cap, &at) in p.kernel_view.evidence.iter().filter(|(c, _)| !p.capabilities.contains(c)) {
            let _ = writeln!(s, "    gate also counts {} (conservatively; last candidate insn {at})", cap.name());
        }
    }
    for u in &report.unreached {
        let sym = u.symbol.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  unreached: section {} insns {}..{}{sym}: no program contains or reaches it",
            u.section, u.start, u.end
        );
    }
    for n in &report.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    for e in &report.errors {
        let _ = writeln!(s, "  error: {e}");
    }
    s
}

/// What a report's reader must know of the loader's rewriting: that CO-RE code was judged as compiled, or what
/// the loader poisons for the target. `None` when there is nothing to say.
pub fn load_note(rw: &bpfgate::metadata::LoadRewrites) -> Option<String> {
    if !rw.target_btf && rw.core_relocations > 0 {
        return Some(format!(
            "{} CO-RE relocations judged as compiled: libbpf rewrites them at load for the kernel (offsets, and \
             poison for what it lacks); --btf judges what that kernel will see",
            rw.core_relocations
        ));
    }
    if rw.poisoned.is_empty() {
        return None;
    }
    let list: Vec<String> = rw.poisoned.iter().map(|p| format!("{}:{} ({})", p.section, p.insn, p.what)).collect();
    Some(format!("instructions the loader poisons (dead code the verifier removes): {}", list.join(", ")))
}
