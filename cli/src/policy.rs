//! `bpfgate policy lint|compile` (issue 3), and `policy suggest` (`suggest.rs`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bpfgate::policy::{compiled, Policy, PolicyError, PolicyWarning};
use serde::Serialize;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// `file:line:column: error|warning: message`, one per line.
    Text,
    /// `{"file", "errors": [...], "warnings": [...]}`.
    Json,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a policy file: errors (exit 2) and warnings such as unreachable rules (exit 0).
    Lint {
        /// The policy file (YAML).
        policy: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Lower a policy to the in-kernel gate's records and write them as CBOR.
    Compile {
        /// The policy file (YAML).
        policy: PathBuf,
        /// Where to write the compiled policy.
        #[arg(short, long)]
        output: PathBuf,
        /// Generation number stored in the header; the daemon swaps tables by generation.
        #[arg(long, default_value_t = 1)]
        generation: u64,
    },
    /// Draft rules admitting exactly what `enforce --json` events show each subject loading (audit2allow).
    Suggest(crate::suggest::Args),
}

#[derive(Serialize)]
struct LintJson<'a> {
    file: &'a str,
    errors: Vec<Diag<'a, PolicyError>>,
    warnings: Vec<Diag<'a, PolicyWarning>>,
}

/// A diagnostic's structured fields plus its sentence.
#[derive(Serialize)]
struct Diag<'a, T: Serialize> {
    #[serde(flatten)]
    diag: &'a T,
    message: String,
}

fn diags<T: Serialize>(v: &[T], message: impl Fn(&T) -> String) -> Vec<Diag<'_, T>> {
    v.iter().map(|d| Diag { diag: d, message: message(d) }).collect()
}

fn read(path: &PathBuf) -> anyhow::Result<(String, String)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
    Ok((name, text))
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Lint { policy, format } => lint(&policy, format),
        Command::Compile { policy, output, generation } => compile(&policy, &output, generation),
        Command::Suggest(args) => crate::suggest::run(args),
    }
}

fn lint(path: &PathBuf, format: Format) -> anyhow::Result<ExitCode> {
    let (name, text) = read(path)?;
    let (errors, warnings, rules) = match Policy::parse(&name, &text) {
        Ok(p) => (Vec::new(), p.lint(), p.rules.len()),
        Err(e) => (e.0, Vec::new(), 0),
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Text => {
            for e in &errors {
                writeln!(out, "{e}")?;
            }
            for w in &warnings {
                writeln!(out, "{w}")?;
            }
            if errors.is_empty() {
                let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
                writeln!(out, "{name}: {}, {}", plural(rules, "rule"), plural(warnings.len(), "warning"))?;
            }
        }
        Format::Json => {
            let j = LintJson {
                file: &name,
                errors: diags(&errors, |e| e.what.to_string()),
                warnings: diags(&warnings, |w| w.what.to_string()),
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&j)?)?;
        }
    }
    Ok(ExitCode::from(if errors.is_empty() { 0 } else { 2 }))
}

fn compile(path: &PathBuf, output: &PathBuf, generation: u64) -> anyhow::Result<ExitCode> {
    let (name, text) = read(path)?;
    let policy = match Policy::parse(&name, &text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let c = match compiled::compile(&policy, generation) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    for w in policy.lint() {
        eprintln!("{w}");
    }
    std::fs::write(output, c.to_cbor()).with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "{}: {} rules, {} attach-target patterns, {} map-name patterns, generation {}",
        output.display(),
        c.rules.len(),
        c.targets.len(),
        c.map_names.len(),
        generation
    );
    Ok(ExitCode::SUCCESS)
}
