//! The guest's root: an uncompressed newc cpio archive (the kernel's initramfs format).
//!
//! Host files are copied in at chosen paths together with the shared libraries `ldd` reports
//! for them, at the paths the dynamic loader will look for them. Uncompressed because the
//! guest often runs under TCG, where decompressing costs more than reading the bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

enum Node {
    Dir,
    /// Contents come from this host file (symlinks followed).
    File {
        source: PathBuf,
        mode: u32,
    },
    Bytes {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
    CharDev {
        major: u32,
        minor: u32,
    },
}

/// Archive paths are relative ("bin/busybox"); the BTreeMap orders parents before children.
#[derive(Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    pub fn new() -> Self {
        let mut fs = Self::default();
        for dir in ["dev", "proc", "sys", "tmp", "run", "root", "etc"] {
            fs.dir(dir);
        }
        // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
        fs.nodes.insert("dev/console".into(), Node::CharDev { major: 5, minor: 1 });
        fs
    }

    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.nodes.entry(prefix.clone()).or_insert(Node::Dir);
        }
    }

    fn parent_dirs(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let path = path.trim_start_matches('/').to_string();
        self.parent_dirs(&path);
        self.nodes.insert(path, Node::Bytes { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/').to_string();
        self.parent_dirs(&path);
        self.nodes.insert(path, Node::Symlink(target.into()));
    }

    /// Adds host file `source` at `path`, keeping its permission bits.
    pub fn file(&mut self, path: &str, source: &Path) -> Result<()> {
        let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", source.display());
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let path = path.trim_start_matches('/').to_string();
        self.parent_dirs(&path);
        self.nodes.insert(path, Node::File { source: source.to_path_buf(), mode });
        Ok(())
    }

    /// Adds an executable at `path` plus every shared library it needs (per ldd), each at the
    /// absolute path ldd resolved, which is where the guest's loader will look.
    pub fn executable(&mut self, path: &str, source: &Path) -> Result<()> {
        self.file(path, source)?;
        for lib in shared_libraries(source)? {
            let archive_path = lib.to_string_lossy().into_owned();
            if !self.nodes.contains_key(archive_path.trim_start_matches('/')) {
                self.file(&archive_path, &lib)?;
            }
        }
        Ok(())
    }

    /// Adds host file `source` at `path` as the host has it: a symlink as a symlink to the file it resolves to
    /// (added too, if it is not there yet), an ELF executable with its shared libraries, anything else (a script) as a file.
    pub fn program(&mut self, path: &str, source: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(source).with_context(|| format!("reading {}", source.display()))?;
        if meta.file_type().is_symlink() {
            // To the file it resolves to on the host, by that absolute path (a relative or /bin target could
            // name busybox's applets in the guest).
            let resolved = fs::canonicalize(source).with_context(|| format!("resolving {}", source.display()))?;
            let at = resolved.to_string_lossy().into_owned();
            self.symlink(path, &at);
            if !self.nodes.contains_key(at.trim_start_matches('/')) {
                self.program(&at, &resolved)?;
            }
            return Ok(());
        }
        let mut magic = [0u8; 4];
        let elf = File::open(source).and_then(|mut f| io::Read::read_exact(&mut f, &mut magic)).is_ok()
            && magic == *b"\x7fELF";
        if elf {
            self.executable(path, source)
        } else {
            self.file(path, source)
        }
    }

    /// Writes the archive; returns its size in bytes.
    pub fn write(&self, out: &Path) -> Result<u64> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = CpioWriter { out: BufWriter::with_capacity(1 << 20, file), ino: 1, len: 0 };
        for (path, node) in &self.nodes {
            match node {
                Node::Dir => w.entry(path, 0o040755, 0, &mut io::empty(), 0)?,
                Node::Bytes { data, mode } => w.entry(path, 0o100000 | mode, data.len() as u64, &mut &data[..], 0)?,
                Node::Symlink(target) => w.entry(path, 0o120777, target.len() as u64, &mut target.as_bytes(), 0)?,
                Node::CharDev { major, minor } => {
                    w.entry(path, 0o020600, 0, &mut io::empty(), (u64::from(*major) << 32) | u64::from(*minor))?;
                }
                Node::File { source, mode } => {
                    let mut f = File::open(source).with_context(|| format!("opening {}", source.display()))?;
                    let size = f.metadata()?.len();
                    w.entry(path, 0o100000 | mode, size, &mut f, 0)
                        .with_context(|| format!("archiving {}", source.display()))?;
                }
            }
        }
        w.entry("TRAILER!!!", 0, 0, &mut io::empty(), 0)?;
        w.out.flush().with_context(|| format!("writing {}", out.display()))?;
        Ok(w.len)
    }
}

struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    len: u64,
}

impl<W: Write> CpioWriter<W> {
    /// One newc record: 110-byte ASCII header, NUL-terminated name, data, each 4-byte aligned.
    fn entry(&mut self, name: &str, mode: u32, size: u64, data: &mut dyn io::Read, rdev: u64) -> Result<()> {
        let Ok(size32) = u32::try_from(size) else {
            bail!("{name} is larger than cpio's 4 GiB limit");
        };
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid: root
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            size32,
            0,
            0,
            (rdev >> 32) as u32,
            rdev as u32,
            name.len() + 1,
            0,
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        let copied = io::copy(&mut io::Read::take(data, size), &mut self.out)?;
        if copied != size {
            bail!("{name} changed size while being archived");
        }
        self.len += copied;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.len % 4) as usize) % 4;
        self.put(&[0; 3][..n])
    }
}

/// The shared libraries (and ELF interpreter) `binary` loads, as absolute host paths.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out =
        Command::new("ldd").arg(binary).env("LC_ALL", "C").output().context("running ldd (is libc-bin installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries need nothing.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)",
        // "linux-vdso.so.1 (0x..)" (provided by the kernel), "libfoo.so => not found".
        if line.contains("=> not found") {
            bail!("{}: shared library missing on the host: {line}", binary.display());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout_is_newc_and_aligned() {
        let mut fs = Initramfs::default();
        fs.bytes("init", b"#!/bin/sh\n".to_vec(), 0o755);
        fs.symlink("bin/sh", "busybox");
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let out = dir.join("a.cpio");
        let len = fs.write(&out).unwrap_or_else(|e| panic!("{e:#}"));
        let data = fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(len as usize, data.len());
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        // Parent directory before its child, trailer last.
        let (bin, sh) = (text.find("bin\0"), text.find("bin/sh\0"));
        assert!(bin.is_some() && bin < sh);
        assert!(text.trim_end_matches('\0').ends_with("TRAILER!!!"));
    }
}
