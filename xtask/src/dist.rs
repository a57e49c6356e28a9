//! `cargo xtask dist`: the release binary, `target/dist/release/bpfgate`, the build the project packages.
//!
//! On glibc Linux it is a static PIE (`-C target-feature=+crt-static`): `bpfgate enforce` runs as root, and a
//! binary without a dynamic loader gives `LD_PRELOAD`, `LD_LIBRARY_PATH` and the host's shared libraries no reach
//! into it; ASLR is kept. Cargo cannot give one binary that target feature in a plain `cargo build`: in
//! `.cargo/config.toml` it reaches the proc-macro crates too, which cannot be built with it. `cargo rustc` passes
//! it to the final crate only, and the link-time `cfg` of std's libc bindings follows it. The own target
//! directory keeps this build and `cargo build --release` from relinking over each other.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Link dynamically, as `cargo build --release` does.
    #[arg(long)]
    dynamic: bool,
}

pub fn run(args: Args) -> Result<bool> {
    let exe = build(&crate::workspace_root(), !args.dynamic)?;
    println!("{}", exe.display());
    Ok(true)
}

/// Builds the release `bpfgate` into `target/dist` and returns its path. `static_pie` applies on glibc Linux
/// where the C library's static archive is installed (Debian: libc6-dev); elsewhere the build is dynamic.
pub(crate) fn build(root: &Path, static_pie: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "rustc",
        "--release",
        "-p",
        "bpfgate-cli",
        "--bin",
        "bpfgate",
        "--message-format=json-render-diagnostics",
    ]);
    cmd.arg("--target-dir").arg(root.join("target").join("dist"));
    let static_pie = static_pie && glibc_static_available();
    if static_pie {
        cmd.args(["--", "-C", "target-feature=+crt-static"]);
    }
    eprintln!("xtask: building the release bpfgate ({})", if static_pie { "static-pie" } else { "dynamic" });
    let out = cmd.stderr(Stdio::inherit()).output().context("running cargo rustc")?;
    if !out.status.success() {
        bail!("building the release bpfgate failed ({})", out.status);
    }
    let mut exe = None;
    for line in out.stdout.lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "bpfgate" {
            if let Some(p) = msg["executable"].as_str() {
                exe = Some(PathBuf::from(p));
            }
        }
    }
    exe.context("cargo reported no `bpfgate` executable")
}

/// Whether this host builds for glibc Linux and the C compiler finds `libc.a`.
fn glibc_static_available() -> bool {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return false;
    }
    Command::new("cc")
        .arg("-print-file-name=libc.a")
        .output()
        .is_ok_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_absolute())
}
