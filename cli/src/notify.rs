//! systemd's service notification protocol (sd_notify(3)) for `bpfgate enforce` under `Type=notify`, in a few
//! lines of std: one datagram of `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`). Without `$NOTIFY_SOCKET` (not started by systemd, or by a unit of
//! another type) nothing is sent.
//!
//! What `enforce` sends (see [`SystemdLifecycle`]): `READY=1` once the gate is attached and the policy installed;
//! `RELOADING=1` (with `MONOTONIC_USEC`) when it takes a reload request (SIGHUP, or a changed file with
//! `--follow`), and `READY=1` again when the reload is done, whether the new policy was installed or refused (the
//! one in force stays: the gate enforces either way, and `STATUS=` says which); `STOPPING=1` when it stops.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

use bpfgate_gate::daemon::{DaemonError, Lifecycle};

/// A socket to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: `Ok(None)` when it is unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => Notifier::new(&name).map(Some),
            _ => Ok(None),
        }
    }

    /// `name` as systemd writes it into `$NOTIFY_SOCKET`: an absolute path, or `@name` for an abstract socket.
    pub fn new(name: &OsStr) -> io::Result<Notifier> {
        let bytes = name.as_bytes();
        let addr = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            SocketAddr::from_abstract_name(abstract_name)?
        } else if bytes.starts_with(b"/") {
            SocketAddr::from_pathname(name)?
        } else {
            // systemd 253+ also offers vsock:CID:PORT, for VMs; not a case for a host daemon.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={} is neither an absolute path nor an abstract name (@...)", name.display()),
            ));
        };
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr })
    }

    /// Sends `state`: newline-separated `KEY=VALUE` assignments, in one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "notification datagram truncated"));
        }
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock of `MONOTONIC_USEC=`.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The enforcement loop's states as systemd notifications. A failed send is reported once on `log` and does
/// not stop the daemon (systemd then times the start out, which is the visible failure).
pub struct SystemdLifecycle<'a> {
    notifier: Option<Notifier>,
    policy: PathBuf,
    log: &'a mut dyn Write,
    warned: bool,
}

impl<'a> SystemdLifecycle<'a> {
    pub fn new(notifier: Option<Notifier>, policy: &Path, log: &'a mut dyn Write) -> SystemdLifecycle<'a> {
        SystemdLifecycle { notifier, policy: policy.to_owned(), log, warned: false }
    }

    fn send(&mut self, state: &str) {
        let Some(n) = &self.notifier else { return };
        if let Err(e) = n.notify(state) {
            if !std::mem::replace(&mut self.warned, true) {
                let _ = writeln!(self.log, "bpfgate: warning: cannot notify systemd: {e}");
            }
        }
    }
}

impl Lifecycle for SystemdLifecycle<'_> {
    fn ready(&mut self) {
        let state = format!("READY=1\nSTATUS=enforcing {}", self.policy.display());
        self.send(&state);
    }

    fn reloading(&mut self) {
        let state =
            format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading {}", monotonic_usec(), self.policy.display());
        self.send(&state);
    }

    fn reloaded(&mut self, result: Result<u64, &DaemonError>) {
        let status = match result {
            Ok(generation) => format!("enforcing {} (generation {generation})", self.policy.display()),
            // One line: STATUS ends at the newline.
            Err(e) => format!("reload refused, the previous policy stays: {}", e.to_string().replace('\n', " ")),
        };
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = crate::test_dir("notify-path");
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        n.notify("READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("bpfgate-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        n.notify("STOPPING=1").unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn refuses_relative_and_vsock_addresses() {
        assert!(Notifier::new(OsStr::new("notify")).is_err());
        assert!(Notifier::new(OsStr::new("vsock:2:1234")).is_err());
    }

    #[test]
    fn lifecycle_sends_ready_reloading_ready_stopping() {
        let dir = crate::test_dir("notify-lifecycle");
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut log = Vec::new();
        let mut life =
            SystemdLifecycle::new(Some(Notifier::new(path.as_os_str()).unwrap()), Path::new("/etc/p.yaml"), &mut log);
        life.ready();
        assert_eq!(recv(&server), "READY=1\nSTATUS=enforcing /etc/p.yaml");
        life.reloading();
        let reloading = recv(&server);
        let lines: Vec<&str> = reloading.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1].strip_prefix("MONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!(usec > 0 && usec <= monotonic_usec());
        life.reloaded(Ok(3));
        assert_eq!(recv(&server), "READY=1\nSTATUS=enforcing /etc/p.yaml (generation 3)");
        // Several errors, so the message has several lines, which STATUS must get as one.
        let errors = bpfgate::Policy::parse("p.yaml", "version: 1\nmode: sometimes\ndefault: maybe\n").unwrap_err();
        let text = errors.to_string();
        assert!(text.lines().count() > 1, "{text}");
        life.reloaded(Err(&DaemonError::Policy(errors)));
        assert_eq!(
            recv(&server),
            format!("READY=1\nSTATUS=reload refused, the previous policy stays: {}", text.replace('\n', " "))
        );
        life.stopping();
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=stopping");
        drop(life);
        assert!(log.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_gone_socket_is_reported_once_and_not_fatal() {
        let dir = crate::test_dir("notify-gone");
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let mut log = Vec::new();
        let mut life = SystemdLifecycle::new(Some(n), Path::new("/p"), &mut log);
        life.ready();
        life.stopping();
        drop(life);
        let log = String::from_utf8(log).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.starts_with("bpfgate: warning: cannot notify systemd:"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_notifier_sends_nothing() {
        let mut log = Vec::new();
        let mut life = SystemdLifecycle::new(None, Path::new("/p"), &mut log);
        life.ready();
        life.reloading();
        life.reloaded(Ok(1));
        life.stopping();
        drop(life);
        assert!(log.is_empty());
    }
}
