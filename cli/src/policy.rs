//! `bpfgate policy lint|compile` (issue 3).
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a policy file for errors and warnings.
    Lint {},
}

pub fn run(_cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("policy is not implemented yet")
}
