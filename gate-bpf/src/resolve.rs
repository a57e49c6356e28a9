//! Policy paths to the keys the gate compares: an executable's `(s_dev, i_ino)` as the kernel encodes them,
//! and a cgroup v2 directory's id (its inode number on cgroup2).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bpfgate::policy::compiled::{ExeKey, Resolver};

/// Resolves paths on this host.
#[derive(Debug, Clone)]
pub struct HostResolver {
    cgroup_root: PathBuf,
}

impl HostResolver {
    /// Uses the first cgroup2 mount in /proc/self/mountinfo, else /sys/fs/cgroup.
    pub fn new() -> HostResolver {
        let root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| cgroup2_mount(&text))
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
        HostResolver { cgroup_root: root }
    }

    pub fn with_cgroup_root(root: impl Into<PathBuf>) -> HostResolver {
        HostResolver { cgroup_root: root.into() }
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }
}

impl Default for HostResolver {
    fn default() -> Self {
        HostResolver::new()
    }
}

/// The mount point of the first cgroup2 line of a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent major:minor root mountpoint options [optional...] - fstype source superopts"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(|m| PathBuf::from(unescape_octal(m)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code =
            b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `st_dev` (glibc's encoding) to the kernel's internal `dev_t` (`MAJOR << 20 | MINOR`), which is what
/// `super_block.s_dev` holds.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    ((major & 0xfff) << 20) | (minor & 0xfffff)
}

impl Resolver for HostResolver {
    fn exe(&self, path: &str) -> Option<ExeKey> {
        // Follows symlinks: the kernel's exe_file is the file itself.
        let md = std::fs::metadata(path).ok()?;
        md.is_file().then(|| ExeKey { dev: kernel_dev(md.dev()), ino: md.ino() })
    }

    fn cgroup(&self, path: &str) -> Option<u64> {
        let md = std::fs::metadata(self.cgroup_root.join(path.trim_start_matches('/'))).ok()?;
        md.is_dir().then(|| md.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_the_kernel() {
        // 8:1 (sda1): glibc 0x801, kernel 0x800001.
        assert_eq!(kernel_dev(0x801), 0x80_0001);
        // 259:65536: major above 255 and minor above 255 use the high bits.
        let (major, minor) = (259u64, 65536u64);
        let st = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32);
        assert_eq!(kernel_dev(st), (major << 20) | minor);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let text = "22 1 0:21 / /proc rw - proc proc rw\n\
                    30 25 0:26 / /sys/fs/cgroup\\040x rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(text), Some(PathBuf::from("/sys/fs/cgroup x")));
        assert_eq!(cgroup2_mount("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn resolves_this_test_binary() {
        let exe = std::env::current_exe().expect("current exe");
        let key = HostResolver::new().exe(&exe.display().to_string()).expect("resolves");
        let md = std::fs::metadata(&exe).expect("stat");
        assert_eq!(key.ino, md.ino());
        assert!(HostResolver::new().exe("/nonexistent/bpfgate").is_none());
    }
}
