//! The `bpfgate` binary as a service runs it: systemd's notifications (`Type=notify`, packaging/bpfgate.service)
//! and `--follow` (the Kubernetes DaemonSet), end to end on a live kernel.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::gate::this_exe;
use crate::{live, load_socket_filter};

/// The next notification datagram, within five minutes (the gate loads slowly under TCG).
fn next_notification(socket: &UnixDatagram, log: &std::sync::Mutex<Vec<String>>) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification from bpfgate enforce ({e}); its log:\n{}", log.lock().unwrap().join("\n")),
    }
}

/// Replaces the policy file in one rename, as an editor or the kubelet does, so the follower never reads half.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn gate_cli_notifies_systemd_and_follows_the_policy_file() {
    let Some(_guard) = live("gate_cli_notifies_systemd_and_follows_the_policy_file") else { return };
    let cli = std::path::Path::new("/usr/bin/bpfgate");
    if !cli.is_file() {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness installs {}", cli.display());
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED gate_cli_notifies_systemd_and_follows_the_policy_file: no {}\n", cli.display()).as_bytes(),
        );
        return;
    }
    let exe = this_exe();
    let dir = std::env::temp_dir().join(format!("bpfgate-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let policy = dir.join("policy.yaml");
    // This executable may load kprobes only: its socket filters are denied.
    let no_filters = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: kprobes-only\n    subject:\n      exe: {exe}\n    \
         prog_types: [kprobe]\n"
    );
    let filters = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: filters-too\n    subject:\n      exe: {exe}\n    \
         prog_types: [kprobe, socket_filter]\n"
    );
    replace(&policy, &no_filters);
    let mut child = Command::new(cli)
        .args(["enforce", "--follow", "--follow-interval", "1", "--policy"])
        .arg(&policy)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bpfgate enforce");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let log_writer = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_writer.lock().unwrap().push(line);
        }
    });

    // READY=1 means enforcing: the very next load is decided by the policy.
    let ready = next_notification(&socket, &log);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    let denied = load_socket_filter("ops_filter_1").map(drop).map_err(|e| e.raw_os_error());
    // A changed file is reloaded without a signal, between RELOADING=1 and READY=1.
    replace(&policy, &filters);
    let started = Instant::now();
    let reloading = next_notification(&socket, &log);
    let reloaded = next_notification(&socket, &log);
    let allowed = load_socket_filter("ops_filter_2").map(drop).map_err(|e| e.raw_os_error());
    // A broken file is refused, and said so; the policy in force stays.
    replace(&policy, "version: 1\nrules: [");
    let reloading_bad = next_notification(&socket, &log);
    let refused = next_notification(&socket, &log);
    let still_allowed = load_socket_filter("ops_filter_3").map(drop).map_err(|e| e.raw_os_error());
    // SAFETY: kill has no memory preconditions; the child is ours and not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let stopping = next_notification(&socket, &log);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().join("\n");
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(denied, Err(Some(libc::EPERM)), "denied as soon as READY=1 arrived\n{log}");
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert!(reloaded.starts_with("READY=1\nSTATUS=enforcing "), "{reloaded}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(120), "the follower took {:?}", started.elapsed());
    assert_eq!(allowed, Ok(()), "allowed after the followed reload\n{log}");
    assert!(reloading_bad.starts_with("RELOADING=1\n"), "{reloading_bad}");
    assert!(refused.starts_with("READY=1\nSTATUS=reload refused"), "{refused}\n{log}");
    assert_eq!(still_allowed, Ok(()), "the refused policy did not replace the one in force\n{log}");
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping");
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("changed: reloading"), "{log}");
}
