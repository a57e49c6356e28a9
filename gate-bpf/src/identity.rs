//! Executable identities that survive upgrades (issue 20).
//!
//! The gate matches an `exe` subject by the `(s_dev, i_ino)` of the file the policy names. Two things go wrong
//! with a key taken once by `stat`:
//!
//! - a package upgrade writes a new file and renames it over the old one: the agent now runs another inode and
//!   is no longer matched;
//! - the old inode is freed once nothing uses it, and its number may be given to an unrelated file on the same
//!   filesystem, which would then match the old rule.
//!
//! [`IdentityResolver`] resolves each `exe` path by opening it (`O_PATH | O_CLOEXEC`, following symlinks as the
//! kernel's `exe_file` does) and taking the key from `fstat` of that fd, so the key and the file held are the
//! same inode. The daemon keeps these fds ([`Identities`]) while their keys are installed: an inode with an
//! open reference is never freed, so its number cannot be reused while a rule names it. Before opening, it adds
//! an inotify watch on the directory of the path and of every symlink the path resolves through ([`Watcher`]),
//! so a replacement, rename, deletion or attribute change of a watched name, from the moment the watch exists,
//! is reported by [`Watcher::changed`]; the daemon then installs the policy in force again with fresh
//! identities and drops the old ones once the new generation is in force.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use bpfgate::policy::compiled::{ExeKey, Resolver};

use crate::resolve::{kernel_dev, HostResolver};

/// The inotify events that can change what a watched name resolves to.
pub const WATCH_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// [`WATCH_MASK`] and a file written in place: what can change a policy file's content (`enforce --follow`).
pub const CONTENT_WATCH_MASK: u32 = WATCH_MASK | libc::IN_CLOSE_WRITE;

/// Symlink hops followed when computing the watch set (the kernel's limit is 40).
const MAX_HOPS: usize = 40;

/// One executable the policy names, held open while its key is installed.
#[derive(Debug)]
pub struct HeldExe {
    /// The path as the policy gives it.
    pub path: String,
    pub key: ExeKey,
    /// `O_PATH` fd of the file itself: keeps the inode, and so its number, alive.
    file: OwnedFd,
}

impl HeldExe {
    /// The held fd (for tests and diagnostics).
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

/// What one resolution produced: the held files and the watches that report changes to their paths.
#[derive(Debug, Default)]
pub struct Identities {
    pub held: Vec<HeldExe>,
    /// None when watching was not asked for, or inotify failed (see [`Identities::watch_error`]).
    pub watcher: Option<Watcher>,
    /// Why a watch could not be set up (the first failure); the identities are still held.
    pub watch_error: Option<String>,
}

impl Identities {
    /// The keys in force, by policy path (several paths may share a key: hard links).
    pub fn keys(&self) -> BTreeMap<&str, ExeKey> {
        self.held.iter().map(|h| (h.path.as_str(), h.key)).collect()
    }

    /// Drains the watcher: what changed among the watched names since the last call (empty: nothing).
    /// Never blocks.
    pub fn changed(&mut self) -> std::io::Result<Vec<String>> {
        match &mut self.watcher {
            Some(w) => w.changed(),
            None => Ok(Vec::new()),
        }
    }

    /// The lines to log for a re-resolution from `old` to `self`: one per path whose key changed.
    pub fn describe_changes(&self, old: &Identities) -> Vec<String> {
        let (before, after) = (old.keys(), self.keys());
        let paths: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
        let show = |k: Option<&ExeKey>| k.map_or_else(|| "nothing".to_owned(), |k| format!("{}:{}", k.dev, k.ino));
        paths
            .into_iter()
            .filter(|p| before.get(p) != after.get(p))
            .map(|p| format!("{p}: {} -> {}", show(before.get(p)), show(after.get(p))))
            .collect()
    }
}

/// A [`Resolver`] that holds what it resolves: exe paths are opened and kept ([`HeldExe`]) and their
/// directories watched; cgroups are [`HostResolver`]'s.
pub struct IdentityResolver {
    host: HostResolver,
    state: RefCell<Identities>,
}

impl IdentityResolver {
    /// `watch`: also set up inotify watches on the paths resolved (the daemon does; `--persist` alone could
    /// not use them once the daemon is gone, but the daemon keeps running with it too).
    pub fn new(host: HostResolver, watch: bool) -> IdentityResolver {
        let mut state = Identities::default();
        if watch {
            match Watcher::new() {
                Ok(w) => state.watcher = Some(w),
                Err(e) => state.watch_error = Some(format!("inotify: {e}")),
            }
        }
        IdentityResolver { host, state: RefCell::new(state) }
    }

    /// The identities resolved so far, to keep while the policy they were installed with is in force.
    pub fn finish(self) -> Identities {
        self.state.into_inner()
    }
}

impl Resolver for IdentityResolver {
    fn exe(&self, path: &str) -> Option<ExeKey> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        // Watches first: a change after this point is reported, so the file opened below is never a stale one
        // nobody will hear about.
        if let Some(w) = &mut state.watcher {
            for (dir, name) in watch_set(Path::new(path)) {
                if let Err(e) = w.watch(&dir, &name) {
                    state.watch_error.get_or_insert_with(|| format!("watching {}: {e}", dir.display()));
                }
            }
        }
        let (file, key) = open_exe(Path::new(path))?;
        state.held.push(HeldExe { path: path.to_owned(), key, file });
        Some(key)
    }

    fn cgroup(&self, path: &str) -> Option<u64> {
        self.host.cgroup(path)
    }
}

/// Opens `path` (following symlinks) with `O_PATH | O_CLOEXEC` and takes its key from the fd: a regular file
/// only, as the kernel's `exe_file` always is.
pub fn open_exe(path: &Path) -> Option<(OwnedFd, ExeKey)> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: c is a NUL-terminated path; open has no other preconditions.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by open and is owned here alone.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (fstat works on O_PATH fds since Linux 3.6) and st is a valid out-pointer.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    Some((file, ExeKey { dev: kernel_dev(st.st_dev), ino: st.st_ino }))
}

/// The `(directory, name)` pairs whose changes can change what `path` resolves to: the directory of `path` and
/// of each symlink it resolves through, with the name looked up there. A missing directory is replaced by its
/// nearest existing ancestor, watched for the next component (creating the directory is a change too).
/// Directories are watched as inotify watches them, following symlinks in their own path.
pub fn watch_set(path: &Path) -> BTreeSet<(PathBuf, OsString)> {
    let mut set = BTreeSet::new();
    let mut current = lexical(path);
    for _ in 0..MAX_HOPS {
        let (Some(dir), Some(name)) = (current.parent(), current.file_name()) else { break };
        set.insert(existing_ancestor(dir, name));
        // A symlink in the middle of the directory part (/bin -> usr/bin) is followed by watching the
        // directory (inotify_add_watch follows it); its own replacement is watched in its parent too.
        if let Ok(real) = dir.canonicalize() {
            if real != dir {
                add_dir_links(dir, &mut set);
            }
        }
        match std::fs::read_link(&current) {
            Ok(target) => current = lexical(&dir.join(target)),
            Err(_) => break,
        }
    }
    set
}

/// For each symlink among the components of `dir`: its parent directory and name.
fn add_dir_links(dir: &Path, set: &mut BTreeSet<(PathBuf, OsString)>) {
    let mut prefix = PathBuf::from("/");
    for c in dir.components() {
        if let Component::Normal(name) = c {
            let here = prefix.join(name);
            if here.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
                set.insert((prefix.clone(), name.to_owned()));
            }
            prefix = here;
        }
    }
}

/// `dir` with `name` when `dir` exists; else the nearest existing ancestor with the component below it.
fn existing_ancestor(dir: &Path, name: &OsStr) -> (PathBuf, OsString) {
    let (mut dir, mut name) = (dir.to_path_buf(), name.to_owned());
    while !dir.is_dir() {
        let (Some(parent), Some(component)) = (dir.parent(), dir.file_name()) else { break };
        name = component.to_owned();
        dir = parent.to_path_buf();
    }
    (dir, name)
}

/// `.` dropped and `..` applied lexically (a symlink target may use them); relative paths kept relative.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// An inotify instance (non-blocking) and what each of its watches is for.
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    mask: u32,
    /// Watch descriptor to (directory, names of interest).
    watches: HashMap<i32, (PathBuf, BTreeSet<OsString>)>,
}

impl Watcher {
    pub fn new() -> std::io::Result<Watcher> {
        Watcher::with_mask(WATCH_MASK)
    }

    /// A watcher whose watches report the events of `mask` ([`WATCH_MASK`], [`CONTENT_WATCH_MASK`]).
    pub fn with_mask(mask: u32) -> std::io::Result<Watcher> {
        // SAFETY: no preconditions; returns -1 (errno set) on failure.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned and is owned here alone.
        Ok(Watcher { fd: unsafe { OwnedFd::from_raw_fd(fd) }, mask, watches: HashMap::new() })
    }

    /// Watches `dir` for changes to `name` (one watch per directory inode; names accumulate).
    pub fn watch(&mut self, dir: &Path, name: &OsStr) -> std::io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: the fd is a live inotify instance and c a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), self.mask) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.watches.entry(wd).or_insert_with(|| (dir.to_path_buf(), BTreeSet::new())).1.insert(name.to_owned());
        Ok(())
    }

    /// Watches every `(directory, name)` of [`watch_set`]`(path)`.
    pub fn watch_path(&mut self, path: &Path) -> std::io::Result<()> {
        watch_set(path).iter().try_for_each(|(dir, name)| self.watch(dir, name))
    }

    /// Waits up to `timeout` for an event to be readable (then [`Watcher::changed`] says what); false on
    /// timeout or a signal.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd for the call.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    }

    /// The watched directories and names, sorted (for tests and logs).
    pub fn watched(&self) -> BTreeSet<(PathBuf, OsString)> {
        self.watches.values().flat_map(|(d, names)| names.iter().map(move |n| (d.clone(), n.clone()))).collect()
    }

    /// Reads every pending event without blocking; returns what changed (`dir/name`, or `dir` for the
    /// directory itself, or `overflow`), empty when nothing relevant happened.
    pub fn changed(&mut self) -> std::io::Result<Vec<String>> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut found = Vec::new();
        loop {
            // SAFETY: buf is valid for buf.len() bytes; the fd is a live non-blocking inotify instance.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => break,
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            for ev in parse_events(&buf[..n as usize]) {
                if let Some(what) = self.relevant(&ev) {
                    found.push(what);
                }
            }
        }
        Ok(found)
    }

    /// What an event changed, if it can change a resolution.
    fn relevant(&self, ev: &RawInotify) -> Option<String> {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            return Some("overflow (events lost)".into());
        }
        let (dir, names) = self.watches.get(&ev.wd)?;
        relevant(dir, names, ev)
    }
}

/// One inotify record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInotify {
    pub wd: i32,
    pub mask: u32,
    pub name: OsString,
}

/// Splits a buffer read from an inotify fd into records (`struct inotify_event`: wd i32, mask u32, cookie
/// u32, len u32, then `len` bytes of NUL-padded name). A truncated tail is ignored.
pub fn parse_events(buf: &[u8]) -> Vec<RawInotify> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = buf.get(at..at + 16) {
        let word = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = word(12) as usize;
        let Some(raw) = buf.get(at + 16..at + 16 + len) else { break };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        out.push(RawInotify { wd: word(0) as i32, mask: word(4), name: OsString::from_vec(raw[..end].to_vec()) });
        at += 16 + len;
    }
    out
}

/// Whether `ev`, on the watch of `dir` for `names`, can change a resolution: an event on one of the names,
/// or the directory itself going away (deleted, moved, unmounted: its watch is dropped with `IN_IGNORED`).
pub fn relevant(dir: &Path, names: &BTreeSet<OsString>, ev: &RawInotify) -> Option<String> {
    let self_gone = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT;
    if ev.mask & self_gone != 0 {
        return Some(dir.display().to_string());
    }
    let on_name = libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_MOVED_FROM
        | libc::IN_MOVED_TO
        | libc::IN_ATTRIB
        | libc::IN_CLOSE_WRITE;
    (ev.mask & on_name != 0 && names.contains(&ev.name)).then(|| dir.join(&ev.name).display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A fresh, canonical directory under the temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bpfgate-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.canonicalize().expect("canonical scratch dir")
    }

    fn fd_ino(fd: i32) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("stat of a held fd").ino()
    }

    #[test]
    fn resolves_through_symlinks_and_holds_the_file() {
        let dir = scratch("symlinks");
        std::fs::create_dir(dir.join("lib")).unwrap();
        std::fs::write(dir.join("lib/agent-1.2"), b"#!/bin/true\n").unwrap();
        std::os::unix::fs::symlink("lib/agent-1.2", dir.join("agent")).unwrap();
        std::os::unix::fs::symlink(dir.join("agent"), dir.join("alias")).unwrap();
        let real = std::fs::metadata(dir.join("lib/agent-1.2")).unwrap();

        let r = IdentityResolver::new(HostResolver::new(), true);
        let alias = dir.join("alias").display().to_string();
        let key = r.exe(&alias).expect("resolves through two links");
        assert_eq!(key, ExeKey { dev: kernel_dev(real.dev()), ino: real.ino() });
        assert!(r.exe(&dir.display().to_string()).is_none(), "a directory is not an executable");
        assert!(r.exe(&dir.join("missing").display().to_string()).is_none());
        let ids = r.finish();
        assert_eq!(ids.held.len(), 1);
        assert_eq!(fd_ino(ids.held[0].fd()), real.ino(), "the fd held is the file keyed");
        assert!(ids.watch_error.is_none(), "{:?}", ids.watch_error);
        let watched = ids.watcher.as_ref().expect("watching").watched();
        let want: BTreeSet<(PathBuf, OsString)> = [
            (dir.clone(), "alias".into()),
            (dir.clone(), "agent".into()),
            (dir.join("lib"), "agent-1.2".into()),
            (dir.clone(), "missing".into()),
        ]
        .into_iter()
        .collect();
        // The directory itself was asked too (and refused); its parent is watched for it.
        let extra: Vec<_> = watched.difference(&want).collect();
        assert!(want.is_subset(&watched), "{watched:?}");
        assert_eq!(extra.len(), 1, "{extra:?}");

        // The file is held: unlinked, its inode stays allocated and its number with it.
        std::fs::remove_file(dir.join("lib/agent-1.2")).unwrap();
        assert_eq!(fd_ino(ids.held[0].fd()), real.ino());
        let nlink = std::fs::metadata(format!("/proc/self/fd/{}", ids.held[0].fd())).unwrap().nlink();
        assert_eq!(nlink, 0, "deleted but held");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watch_set_of_a_missing_directory_is_its_nearest_ancestor() {
        let dir = scratch("missing");
        let set = watch_set(&dir.join("opt/agent/bin/agent"));
        assert_eq!(set, [(dir.clone(), OsString::from("opt"))].into_iter().collect());
        let set = watch_set(&dir.join("./x/../agent"));
        assert_eq!(set, [(dir.clone(), OsString::from("agent"))].into_iter().collect());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watch_set_follows_directory_symlinks() {
        let dir = scratch("dirlinks");
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), b"x").unwrap();
        let set = watch_set(&dir.join("bin/tool"));
        let want: BTreeSet<(PathBuf, OsString)> =
            [(dir.join("bin"), "tool".into()), (dir.clone(), "bin".into())].into_iter().collect();
        assert_eq!(set, want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_and_filters_events() {
        let mut buf = Vec::new();
        let mut push = |wd: i32, mask: u32, name: &[u8], len: u32| {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&len.to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(len as usize, 0);
            buf.extend_from_slice(&n);
        };
        push(1, libc::IN_MOVED_TO, b"agent", 16);
        push(1, libc::IN_CREATE, b"agent.dpkg-new", 16);
        push(2, libc::IN_DELETE_SELF, b"", 0);
        let events = parse_events(&buf);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], RawInotify { wd: 1, mask: libc::IN_MOVED_TO, name: "agent".into() });
        assert_eq!(events[1].name, OsString::from("agent.dpkg-new"));
        // A truncated record is dropped, not misread.
        assert_eq!(parse_events(&buf[..buf.len() - 1]).len(), 2);
        assert_eq!(parse_events(&buf[..buf.len() - 17]).len(), 1);

        let names: BTreeSet<OsString> = [OsString::from("agent")].into_iter().collect();
        let dir = Path::new("/opt/x");
        assert_eq!(relevant(dir, &names, &events[0]).as_deref(), Some("/opt/x/agent"));
        assert_eq!(relevant(dir, &names, &events[1]), None, "another name in the same directory");
        assert_eq!(relevant(dir, &names, &events[2]).as_deref(), Some("/opt/x"));
        for mask in [libc::IN_CREATE, libc::IN_DELETE, libc::IN_MOVED_FROM, libc::IN_ATTRIB] {
            let ev = RawInotify { wd: 1, mask, name: "agent".into() };
            assert!(relevant(dir, &names, &ev).is_some(), "mask {mask:#x}");
        }
        // A write in place: only a content watch (CONTENT_WATCH_MASK, `enforce --follow`) asks for it, and there it
        // can change what the file says; an executable's watch (WATCH_MASK) never receives it.
        assert_eq!(WATCH_MASK & libc::IN_CLOSE_WRITE, 0);
        let ev = RawInotify { wd: 1, mask: libc::IN_CLOSE_WRITE, name: "agent".into() };
        assert_eq!(relevant(dir, &names, &ev).as_deref(), Some("/opt/x/agent"));
        let ev = RawInotify { wd: 1, mask: libc::IN_MODIFY | libc::IN_ACCESS, name: "agent".into() };
        assert_eq!(relevant(dir, &names, &ev), None);
    }

    #[test]
    fn changes_behind_a_symlink_are_reported() {
        let dir = scratch("behind-link");
        std::fs::create_dir(dir.join("lib")).unwrap();
        std::fs::write(dir.join("lib/python3.11"), b"v1").unwrap();
        std::fs::write(dir.join("lib/python3.12"), b"v2").unwrap();
        std::os::unix::fs::symlink("lib/python3.11", dir.join("python3")).unwrap();
        let path = dir.join("python3").display().to_string();
        let r = IdentityResolver::new(HostResolver::new(), true);
        let first = r.exe(&path).expect("resolves");
        let mut ids = r.finish();

        // The target upgraded in place of the link's name: reported through the target's directory.
        std::fs::write(dir.join("lib/python3.11.new"), b"v1.1").unwrap();
        assert_eq!(ids.changed().unwrap(), Vec::<String>::new());
        std::fs::rename(dir.join("lib/python3.11.new"), dir.join("lib/python3.11")).unwrap();
        assert_eq!(ids.changed().unwrap(), vec![dir.join("lib/python3.11").display().to_string()]);
        let r = IdentityResolver::new(HostResolver::new(), true);
        let second = r.exe(&path).expect("resolves");
        assert_ne!(second, first);
        let mut ids = r.finish();

        // The link pointed elsewhere (update-alternatives): reported through the link's directory.
        std::os::unix::fs::symlink("lib/python3.12", dir.join("python3.tmp")).unwrap();
        std::fs::rename(dir.join("python3.tmp"), dir.join("python3")).unwrap();
        assert_eq!(ids.changed().unwrap(), vec![dir.join("python3").display().to_string()]);
        let r = IdentityResolver::new(HostResolver::new(), true);
        let third = r.exe(&path).expect("resolves");
        let v2 = std::fs::metadata(dir.join("lib/python3.12")).unwrap().ino();
        assert_eq!(third.ino, v2);
        let ids = r.finish();
        assert!(ids.watcher.as_ref().unwrap().watched().contains(&(dir.join("lib"), "python3.12".into())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_replacement_is_reported_and_re_resolves_to_the_new_file() {
        let dir = scratch("replace");
        let agent = dir.join("agent");
        std::fs::write(&agent, b"v1").unwrap();
        let r = IdentityResolver::new(HostResolver::new(), true);
        let old = r.exe(&agent.display().to_string()).expect("resolves");
        let mut ids = r.finish();
        assert_eq!(ids.changed().unwrap(), Vec::<String>::new(), "nothing happened yet");

        // Unrelated names in the directory are not changes.
        std::fs::write(dir.join("agent.dpkg-new"), b"v2").unwrap();
        assert_eq!(ids.changed().unwrap(), Vec::<String>::new());
        std::fs::rename(dir.join("agent.dpkg-new"), &agent).unwrap();
        let changed = ids.changed().unwrap();
        assert!(changed.contains(&agent.display().to_string()), "{changed:?}");
        // The old inode is still held: its number cannot go to another file yet.
        assert_eq!(fd_ino(ids.held[0].fd()), old.ino);

        let r = IdentityResolver::new(HostResolver::new(), true);
        let new = r.exe(&agent.display().to_string()).expect("resolves");
        assert_ne!(new, old);
        let fresh = r.finish();
        let log = fresh.describe_changes(&ids);
        assert_eq!(log, vec![format!("{}: {}:{} -> {}:{}", agent.display(), old.dev, old.ino, new.dev, new.ino)]);

        // Deletion is a change too, and then the path resolves to nothing.
        let mut ids = fresh;
        std::fs::remove_file(&agent).unwrap();
        assert!(!ids.changed().unwrap().is_empty());
        let r = IdentityResolver::new(HostResolver::new(), true);
        assert!(r.exe(&agent.display().to_string()).is_none());
        assert_eq!(
            r.finish().describe_changes(&ids),
            vec![format!("{}: {}:{} -> nothing", agent.display(), new.dev, new.ino)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
