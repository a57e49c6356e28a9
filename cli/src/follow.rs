//! `bpfgate enforce --follow`: reload when the policy file's content changes, for policies that are replaced
//! rather than signalled about. A Kubernetes ConfigMap volume is the case: the kubelet writes the new files into
//! a fresh directory and swaps the `..data` symlink, so the mounted `policy.yaml` (a symlink to
//! `..data/policy.yaml`) changes content without anyone to send SIGHUP.
//!
//! The file is read through its symlinks once per interval and its content digested; a digest different from
//! the last one sets the same reload flag SIGHUP sets, so the reload is the daemon's usual one (a bad policy is
//! refused and the one in force stays). A file that cannot be read (mid-swap, or removed) is not a change: the
//! last digest stays and the next readable content is compared with it.

use std::hash::Hasher as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bpfgate_gate::daemon::Control;

/// The content of a file as last seen: its length and a 64-bit SipHash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    len: u64,
    hash: u64,
}

/// Reads `path` (following symlinks) and digests it; None when it cannot be read.
pub fn digest(path: &Path) -> Option<Digest> {
    let bytes = std::fs::read(path).ok()?;
    // DefaultHasher::new() has fixed keys: the same content gives the same digest in this process. Whoever can
    // write the policy file decides the policy anyway, so a collision gains nothing.
    let mut h = std::hash::DefaultHasher::new();
    h.write(&bytes);
    Some(Digest { len: bytes.len() as u64, hash: h.finish() })
}

/// A policy file watched for content changes.
#[derive(Debug)]
pub struct PolicyWatch {
    path: PathBuf,
    last: Option<Digest>,
}

impl PolicyWatch {
    /// Takes the current content as the baseline. Take it before the daemon reads the policy: a change in
    /// between then costs one reload of the same content instead of a missed one.
    pub fn new(path: &Path) -> PolicyWatch {
        PolicyWatch { path: path.to_owned(), last: digest(path) }
    }

    /// Whether the content differs from the last content seen (which this then becomes).
    pub fn changed(&mut self) -> bool {
        match digest(&self.path) {
            Some(d) if self.last != Some(d) => {
                self.last = Some(d);
                true
            }
            _ => false,
        }
    }
}

/// Polls `watch` every `interval` until `control.stop`, setting `control.reload` on each change. Runs on its
/// own thread beside the daemon's loop.
pub fn follow(mut watch: PolicyWatch, control: &Control, interval: Duration, log: &mut dyn Write) {
    while !control.stop.load(Ordering::SeqCst) {
        std::thread::sleep(interval);
        if watch.changed() {
            let _ = writeln!(log, "bpfgate: {} changed: reloading", watch.path.display());
            control.reload.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bpfgate-follow-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// What the kubelet does to a ConfigMap volume: the files in a timestamped directory, `..data` a symlink to
    /// it, each key a symlink through `..data`; an update writes a new directory and renames a new `..data`
    /// symlink over the old one (atomic), then removes the old directory.
    fn configmap_write(dir: &Path, generation: u32, content: &str) {
        let data = dir.join(format!("..2026_12_05_17_00_0{generation}.000"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("policy.yaml"), content).unwrap();
        let tmp = dir.join("..data_tmp");
        symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        if !dir.join("policy.yaml").exists() {
            symlink("..data/policy.yaml", dir.join("policy.yaml")).unwrap();
        }
        if generation > 0 {
            let old = dir.join(format!("..2026_12_05_17_00_0{}.000", generation - 1));
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    #[test]
    fn a_configmap_symlink_swap_is_a_change_once() {
        let dir = temp_dir("configmap");
        configmap_write(&dir, 0, "version: 1\nrules: []\n");
        let mut watch = PolicyWatch::new(&dir.join("policy.yaml"));
        assert!(!watch.changed(), "nothing changed yet");
        configmap_write(&dir, 1, "version: 1\nmode: audit\nrules: []\n");
        assert!(watch.changed());
        assert!(!watch.changed(), "the same content is not a second change");
        // Same length, different bytes.
        configmap_write(&dir, 2, "version: 1\nmode: audiT\nrules: []\n");
        assert!(watch.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_moment_is_not_a_change() {
        let dir = temp_dir("missing");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a").unwrap();
        let mut watch = PolicyWatch::new(&file);
        std::fs::remove_file(&file).unwrap();
        assert!(!watch.changed());
        std::fs::write(&file, "a").unwrap();
        assert!(!watch.changed(), "back with the same content");
        std::fs::write(&file, "b").unwrap();
        assert!(watch.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_missing_at_start_is_a_change_when_it_appears() {
        let dir = temp_dir("late");
        let file = dir.join("policy.yaml");
        let mut watch = PolicyWatch::new(&file);
        assert!(!watch.changed());
        std::fs::write(&file, "a").unwrap();
        assert!(watch.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn follow_sets_the_reload_flag_and_stops_with_the_loop() {
        let dir = temp_dir("thread");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a").unwrap();
        let control = Control { reload: AtomicBool::new(false), stop: AtomicBool::new(false) };
        let watch = PolicyWatch::new(&file);
        let mut log = Vec::new();
        std::thread::scope(|s| {
            let follower = s.spawn(|| follow(watch, &control, Duration::from_millis(10), &mut log));
            std::fs::write(&file, "b").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !control.reload.load(Ordering::SeqCst) {
                assert!(std::time::Instant::now() < deadline, "no reload requested");
                std::thread::sleep(Duration::from_millis(5));
            }
            control.stop.store(true, Ordering::SeqCst);
            follower.join().unwrap();
        });
        let log = String::from_utf8(log).unwrap();
        assert_eq!(log, format!("bpfgate: {} changed: reloading\n", file.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
