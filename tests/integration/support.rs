//! Paths and helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The corpus of real-world objects: the committed `corpus/`, or `BPFGATE_CORPUS` (another set of objects).
pub fn corpus() -> PathBuf {
    std::env::var_os("BPFGATE_CORPUS").map(PathBuf::from).unwrap_or_else(|| repo().join("corpus"))
}

pub use bpfgate_test_support::files::under as files_with;

/// Runs the `bpfgate` binary built for this test run.
pub fn bpfgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bpfgate")).args(args).current_dir(repo()).output().expect("bpfgate runs")
}
