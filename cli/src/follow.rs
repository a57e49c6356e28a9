//! `bpfgate enforce --follow`: reload when the policy file's content changes, for policies that are replaced
//! rather than signalled about. A Kubernetes ConfigMap volume is the case: the kubelet writes the new files into
//! a fresh directory and swaps the `..data` symlink, so the mounted `policy.yaml` (a symlink to
//! `..data/policy.yaml`) changes content without anyone to send SIGHUP.
//!
//! The same inotify machinery that follows the policy's executables (`bpfgate_gate::identity`: the directory
//! of the path and of every symlink it resolves through, so the `..data` swap is seen) wakes the follower as
//! soon as the file is replaced, renamed, deleted or written in place; the watches are set again after each
//! wake-up, since a swap changes the directories the path goes through. The content is then read through the
//! symlinks and digested; a digest different from the last one sets the same reload flag SIGHUP sets, so the
//! reload is the daemon's usual one (a bad policy is refused and the one in force stays). The digest is also
//! compared every `--follow-interval` seconds whatever inotify says, for file systems that report nothing
//! (network file systems) and as the fallback when inotify cannot be set up. A file that cannot be read
//! (mid-swap, or removed) is not a change: the last digest stays and the next readable content is compared with
//! it.

use std::hash::Hasher as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bpfgate_gate::daemon::Control;
use bpfgate_gate::identity::{Watcher, CONTENT_WATCH_MASK};

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

/// A policy file watched by content and by inotify.
#[derive(Debug)]
pub struct Follower {
    watch: PolicyWatch,
    watcher: Option<Watcher>,
}

impl Follower {
    /// Sets the watches now: a change from here on is seen at once by [`Follower::run`].
    pub fn new(watch: PolicyWatch, log: &mut dyn Write) -> Follower {
        let watcher = watch_policy(&watch.path, log);
        Follower { watch, watcher }
    }

    /// Follows the file until `control.stop`, setting `control.reload` on each change: at once on an inotify
    /// event, and every `interval` in any case. Runs on its own thread beside the daemon's loop.
    pub fn run(self, control: &Control, interval: Duration, log: &mut dyn Write) {
        let Follower { mut watch, mut watcher } = self;
        let mut last_check = std::time::Instant::now();
        while !control.stop.load(Ordering::SeqCst) {
            let woke = match &mut watcher {
                // Short waits: the loop also sees `control.stop` within this long.
                Some(w) => w.wait(Duration::from_millis(250)) && w.changed().is_ok_and(|c| !c.is_empty()),
                None => {
                    std::thread::sleep(Duration::from_millis(250).min(interval));
                    false
                }
            };
            if !woke && last_check.elapsed() < interval {
                continue;
            }
            last_check = std::time::Instant::now();
            if woke {
                // The path may go through other directories now (a new ..data target): watch those.
                watcher = watch_policy(&watch.path, log);
            }
            if watch.changed() {
                let _ = writeln!(log, "bpfgate: {} changed: reloading", watch.path.display());
                control.reload.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// An inotify watcher on what can change `path`'s content; None (said in `log`) when inotify fails: the
/// periodic check alone follows then.
fn watch_policy(path: &Path, log: &mut dyn Write) -> Option<Watcher> {
    let watched = Watcher::with_mask(CONTENT_WATCH_MASK).and_then(|mut w| w.watch_path(path).map(|()| w));
    match watched {
        Ok(w) => Some(w),
        Err(e) => {
            let _ = writeln!(log, "bpfgate: warning: {} not watched ({e}); checked periodically", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicBool;

    use super::*;

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
        let dir = crate::test_dir("follow-configmap");
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

    /// Waits (up to 10 s) for `control.reload`; how long it took.
    fn reload_within(control: &Control) -> Duration {
        let start = std::time::Instant::now();
        while !control.reload.swap(false, Ordering::SeqCst) {
            assert!(start.elapsed() < Duration::from_secs(10), "no reload requested");
            std::thread::sleep(Duration::from_millis(5));
        }
        start.elapsed()
    }

    /// inotify, not the interval (an hour here), wakes the follower: for a ConfigMap's `..data` swap and for a
    /// file written in place.
    #[test]
    fn changes_are_seen_at_once_without_waiting_for_the_interval() {
        let dir = crate::test_dir("follow-inotify");
        configmap_write(&dir, 0, "version: 1\nrules: []\n");
        let path = dir.join("policy.yaml");
        let control = Control { reload: AtomicBool::new(false), stop: AtomicBool::new(false) };
        let mut log = Vec::new();
        // The watches are set here, before the changes (a change before them is only seen at the interval).
        let follower = Follower::new(PolicyWatch::new(&path), &mut log);
        let (swap, second_swap, in_place) = std::thread::scope(|s| {
            let follower = s.spawn(|| follower.run(&control, Duration::from_secs(3600), &mut log));
            configmap_write(&dir, 1, "version: 1\nmode: audit\nrules: []\n");
            let swap = reload_within(&control);
            // The follower watched the new directories before it asked for the reload. The second swap goes
            // through a directory that did not exist when it started.
            configmap_write(&dir, 2, "version: 1\nmode: enforce\nrules: []\n");
            let second_swap = reload_within(&control);
            let plain = dir.join("plain.yaml");
            std::fs::write(&plain, "a").unwrap();
            control.stop.store(true, Ordering::SeqCst);
            follower.join().unwrap();
            control.stop.store(false, Ordering::SeqCst);
            let follower = Follower::new(PolicyWatch::new(&plain), &mut std::io::sink());
            let follower = s.spawn(|| follower.run(&control, Duration::from_secs(3600), &mut std::io::sink()));
            std::fs::OpenOptions::new().write(true).truncate(true).open(&plain).unwrap().write_all(b"b").unwrap();
            let in_place = reload_within(&control);
            control.stop.store(true, Ordering::SeqCst);
            follower.join().unwrap();
            (swap, second_swap, in_place)
        });
        std::fs::remove_dir_all(&dir).unwrap();
        for (what, took) in [("swap", swap), ("second swap", second_swap), ("in-place write", in_place)] {
            assert!(took < Duration::from_secs(5), "{what}: {took:?}");
        }
        assert_eq!(String::from_utf8(log).unwrap().matches("changed: reloading").count(), 2);
    }

    #[test]
    fn an_unreadable_moment_is_not_a_change() {
        let dir = crate::test_dir("follow-missing");
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
        let dir = crate::test_dir("follow-late");
        let file = dir.join("policy.yaml");
        let mut watch = PolicyWatch::new(&file);
        assert!(!watch.changed());
        std::fs::write(&file, "a").unwrap();
        assert!(watch.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn follow_sets_the_reload_flag_and_stops_with_the_loop() {
        let dir = crate::test_dir("follow-thread");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a").unwrap();
        let control = Control { reload: AtomicBool::new(false), stop: AtomicBool::new(false) };
        let watch = PolicyWatch::new(&file);
        let mut log = Vec::new();
        std::thread::scope(|s| {
            let follower = Follower::new(watch, &mut std::io::sink());
            let follower = s.spawn(|| follower.run(&control, Duration::from_millis(10), &mut log));
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
