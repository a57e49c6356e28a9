//! `cargo xtask deb`: the Debian package, `target/deb/bpfgate_VERSION_ARCH.deb`, built with `dpkg-deb` from the
//! release binary of `cargo xtask dist` and the files in `packaging/`:
//!
//! | installed as | from |
//! | --- | --- |
//! | /usr/bin/bpfgate | `cargo xtask dist` (static PIE), stripped |
//! | /lib/systemd/system/bpfgate.service | packaging/bpfgate.service |
//! | /etc/bpfgate/policy.yaml (conffile) | packaging/policy.yaml (audit mode) |
//! | /etc/default/bpfgate (conffile) | packaging/default |
//! | /usr/share/man/man1/bpfgate*.1.gz, completions | `bpfgate generate-assets` (clap_mangen, clap_complete) |
//! | /usr/share/doc/bpfgate/ | copyright (with the linked crates from `cargo tree`), changelog, docs, examples |
//! | DEBIAN/ | packaging/debian/ (control, maintainer scripts), conffiles, md5sums |
//!
//! `--check` then runs `systemd-analyze verify` on the unit inside the staged tree and `lintian` on the
//! package; either one's complaint fails the command. Overrides are in packaging/debian/lintian-overrides,
//! each with its reason.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Package this bpfgate binary instead of building the release one (e.g. target/debug/bpfgate, to try the
    /// packaging quickly; lintian then rightly complains about it).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Run `systemd-analyze verify` on the unit and `lintian` on the package; fail on any complaint.
    #[arg(long)]
    check: bool,
    /// The Maintainer field (and the changelog's signature).
    #[arg(long, default_value = "bpfgate maintainers <maintainers@bpfgate.example.org>")]
    maintainer: String,
}

pub fn run(args: Args) -> Result<bool> {
    let root = crate::workspace_root();
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => crate::dist::build(&root, true)?,
    };
    let deb = build(&root, &binary, &args.maintainer)?;
    println!("{}", deb.display());
    if args.check {
        check(&root, &deb)?;
        eprintln!("xtask: systemd-analyze verify and lintian: clean");
    }
    Ok(true)
}

fn run_cmd(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn write(path: &Path, content: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        mkdirs(dir)?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `mkdir -p` with mode 0755 whatever the umask.
fn mkdirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    Ok(())
}

/// `gzip -9n`: no name or time stamp in the header, as Debian policy asks for reproducible packages.
fn gzip(content: &[u8], dest: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let content = content.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&content));
    let out = child.wait_with_output()?;
    feeder.join().map_err(|_| anyhow::anyhow!("gzip feeder panicked"))??;
    ensure!(out.status.success(), "gzip failed");
    write(dest, out.stdout, 0o644)
}

/// The crates linked into the binary, as `name version: license` lines, from `cargo tree`.
fn linked_crates(root: &Path) -> Result<Vec<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_cmd(Command::new(cargo).current_dir(root).args([
        "tree",
        "--locked",
        "-p",
        "bpfgate-cli",
        "-e",
        "normal,no-proc-macro",
        "--prefix",
        "none",
        "-f",
        "{p}|{l}",
    ]))?;
    let mut crates: Vec<String> = String::from_utf8(out)?
        .lines()
        .filter_map(|line| {
            // cargo tree marks a crate already listed with " (*)" after the format's last field.
            let (pkg, license) = line.trim_end_matches(" (*)").split_once('|')?;
            let mut words = pkg.split_whitespace();
            let (name, version) = (words.next()?, words.next()?);
            // The workspace's own crates are `Files: *`.
            (!name.starts_with("bpfgate")).then(|| format!("{name} {version}: {}", license.trim()))
        })
        .collect();
    crates.sort();
    crates.dedup();
    ensure!(!crates.is_empty(), "cargo tree listed no crates");
    Ok(crates)
}

fn arch() -> Result<String> {
    Ok(String::from_utf8(run_cmd(Command::new("dpkg").arg("--print-architecture"))?)?.trim().to_owned())
}

/// Stages the package tree and builds the .deb; returns its path.
pub(crate) fn build(root: &Path, binary: &Path, maintainer: &str) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = arch()?;
    let pkg = root.join("packaging");
    let out_dir = root.join("target").join("deb");
    let stage = out_dir.join(format!("bpfgate_{version}_{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    mkdirs(&stage)?;
    let read = |rel: &str| std::fs::read(pkg.join(rel)).with_context(|| format!("reading packaging/{rel}"));
    let fill = |text: Vec<u8>| -> Result<String> {
        Ok(String::from_utf8(text)?
            .replace("@VERSION@", version)
            .replace("@ARCH@", &arch)
            .replace("@MAINTAINER@", maintainer))
    };

    // The binary, stripped of its debug information (the release profile keeps line tables).
    let bin = stage.join("usr/bin/bpfgate");
    mkdirs(bin.parent().unwrap())?;
    run_cmd(Command::new("strip").args(["--strip-unneeded", "--remove-section=.comment", "-o"]).arg(&bin).arg(binary))?;
    write(&bin, std::fs::read(&bin)?, 0o755)?;

    // Man pages and completions, from the binary being packaged.
    let assets = out_dir.join("assets");
    if assets.exists() {
        std::fs::remove_dir_all(&assets)?;
    }
    run_cmd(Command::new(&bin).arg("generate-assets").arg("--out").arg(&assets))?;
    let man_dir = assets.join("man/man1");
    let mut pages: Vec<_> = std::fs::read_dir(&man_dir)?.collect::<Result<_, _>>()?;
    pages.sort_by_key(std::fs::DirEntry::file_name);
    ensure!(!pages.is_empty(), "generate-assets wrote no man pages");
    for page in pages {
        let name = page.file_name().to_string_lossy().into_owned();
        gzip(&std::fs::read(page.path())?, &stage.join(format!("usr/share/man/man1/{name}.gz")))?;
    }
    let comp = assets.join("completions");
    write(
        &stage.join("usr/share/bash-completion/completions/bpfgate"),
        std::fs::read(comp.join("bpfgate.bash"))?,
        0o644,
    )?;
    write(&stage.join("usr/share/zsh/vendor-completions/_bpfgate"), std::fs::read(comp.join("_bpfgate"))?, 0o644)?;
    write(
        &stage.join("usr/share/fish/vendor_completions.d/bpfgate.fish"),
        std::fs::read(comp.join("bpfgate.fish"))?,
        0o644,
    )?;

    // The service, its configuration (conffiles) and the lintian overrides.
    write(&stage.join("lib/systemd/system/bpfgate.service"), read("bpfgate.service")?, 0o644)?;
    write(&stage.join("etc/bpfgate/policy.yaml"), read("policy.yaml")?, 0o644)?;
    write(&stage.join("etc/default/bpfgate"), read("default")?, 0o644)?;
    write(&stage.join("usr/share/lintian/overrides/bpfgate"), read("debian/lintian-overrides")?, 0o644)?;

    // Documentation.
    let doc = stage.join("usr/share/doc/bpfgate");
    let crates = linked_crates(root)?;
    let mut crate_lines = String::new();
    for c in &crates {
        let _ = writeln!(crate_lines, "   {c}");
    }
    let copyright = fill(read("debian/copyright.in")?)?.replace("@CRATES@\n", &crate_lines);
    write(&doc.join("copyright"), copyright, 0o644)?;
    gzip(fill(read("debian/changelog")?)?.as_bytes(), &doc.join("changelog.gz"))?;
    for (from, to) in
        [("README.md", "README.md.gz"), ("docs/policy.md", "policy.md.gz"), ("gate-bpf/README.md", "gate.md.gz")]
    {
        gzip(&std::fs::read(root.join(from)).with_context(|| format!("reading {from}"))?, &doc.join(to))?;
    }
    let mut examples: Vec<_> = std::fs::read_dir(root.join("examples/policies"))?.collect::<Result<_, _>>()?;
    examples.sort_by_key(std::fs::DirEntry::file_name);
    for e in examples {
        write(&doc.join("examples").join(e.file_name()), std::fs::read(e.path())?, 0o644)?;
    }

    // DEBIAN/: control (with the installed size in KiB), conffiles, maintainer scripts, md5sums.
    let control_dir = stage.join("DEBIAN");
    let mut files = Vec::new();
    collect_files(&stage, &stage, &mut files)?;
    let size_kib: u64 =
        files.iter().map(|f| stage.join(f).metadata().map(|m| m.len().div_ceil(1024))).sum::<Result<u64, _>>()?;
    let control = fill(read("debian/control.in")?)?.replace("@SIZE@", &size_kib.to_string());
    write(&control_dir.join("control"), control, 0o644)?;
    write(&control_dir.join("conffiles"), "/etc/bpfgate/policy.yaml\n/etc/default/bpfgate\n", 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        write(&control_dir.join(script), read(&format!("debian/{script}"))?, 0o755)?;
    }
    let mut md5sums = String::new();
    for f in files.iter().filter(|f| !f.starts_with("etc/")) {
        let sum = String::from_utf8(run_cmd(Command::new("md5sum").arg(stage.join(f)))?)?;
        let hash = sum.split_whitespace().next().context("md5sum output")?;
        let _ = writeln!(md5sums, "{hash}  {}", f.display());
    }
    write(&control_dir.join("md5sums"), md5sums, 0o644)?;

    let deb = out_dir.join(format!("bpfgate_{version}_{arch}.deb"));
    run_cmd(
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", source_date_epoch(root))
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The time of the last commit, for reproducible archive time stamps.
fn source_date_epoch(root: &Path) -> String {
    Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "0".into())
}

/// Files under `dir`, relative to `base`, sorted.
fn collect_files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        if e.file_type()?.is_dir() {
            collect_files(base, &path, out)?;
        } else {
            out.push(path.strip_prefix(base)?.to_path_buf());
        }
    }
    Ok(())
}

/// `systemd-analyze verify` on the staged unit, then `lintian` on the package; any complaint is an error.
pub(crate) fn check(root: &Path, deb: &Path) -> Result<()> {
    let stage = deb.with_extension("");
    // The unit as installed: --root resolves ExecStart= and the other paths inside a root made of the staged
    // tree and /bin/kill of ExecReload= (package procps, a dependency of the package). Man pages are not looked up (the
    // host's man database does not have them). Unknown or misspelled settings are only warnings to systemd,
    // so any output counts as a failure.
    let verify_root = deb.with_extension("verify-root");
    if verify_root.exists() {
        std::fs::remove_dir_all(&verify_root)?;
    }
    for (rel, mode) in [("lib/systemd/system/bpfgate.service", 0o644), ("usr/bin/bpfgate", 0o755)] {
        write(&verify_root.join(rel), std::fs::read(stage.join(rel))?, mode)?;
    }
    // A stand-in: only the presence of an executable /bin/kill is checked.
    write(&verify_root.join("bin/kill"), "#!/bin/sh\n", 0o755)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", verify_root.display()))
        .arg(verify_root.join("lib/systemd/system/bpfgate.service"))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .context("running systemd-analyze (Debian package systemd)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify bpfgate.service:\n{said}");
    eprintln!("xtask: systemd-analyze verify: clean");

    // --fail-on warning: errors and warnings fail; info and pedantic tags are shown, not fatal.
    let out = Command::new("lintian")
        .current_dir(root)
        .args(["--fail-on", "error,warning", "--display-info", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("running lintian (scripts/install-deps.sh installs it)")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !said.trim().is_empty() {
        eprintln!("{}", said.trim_end());
    }
    ensure!(out.status.success(), "lintian found errors or warnings in {}", deb.display());
    Ok(())
}
