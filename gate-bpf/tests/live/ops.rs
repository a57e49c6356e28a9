//! The `bpfgate` binary as a service runs it: systemd's notifications (`Type=notify`, packaging/bpfgate.service)
//! and `--follow` (the Kubernetes DaemonSet), end to end on a live kernel.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::gate::this_exe;
use crate::{live, load_socket_filter};

/// Writes to the process's stderr directly (libtest hides eprintln! of passing tests): the VM logs' evidence.
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
    let cli = std::path::Path::new(CLI);
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
    // READY=1 means enforcing (Daemon::start waits for it): the very next load is decided by the policy.
    let daemon = Daemon::start(
        &dir,
        &["--follow", "--follow-interval", "1", "--policy", policy.to_str().unwrap()],
        Stdio::null(),
    );
    let (socket, log) = (&daemon.socket, &daemon.log);
    let denied = load_socket_filter("ops_filter_1").map(drop).map_err(|e| e.raw_os_error());
    // A changed file is reloaded without a signal, between RELOADING=1 and READY=1.
    replace(&policy, &filters);
    let started = Instant::now();
    let reloading = next_notification(socket, log);
    let reloaded = next_notification(socket, log);
    let allowed = load_socket_filter("ops_filter_2").map(drop).map_err(|e| e.raw_os_error());
    // A broken file is refused, and said so; the policy in force stays.
    replace(&policy, "version: 1\nrules: [");
    let reloading_bad = next_notification(socket, log);
    let refused = next_notification(socket, log);
    let still_allowed = load_socket_filter("ops_filter_3").map(drop).map_err(|e| e.raw_os_error());
    daemon.terminate();
    let stopping = next_notification(socket, log);
    let (status, log) = daemon.wait();
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

// ---- bpfgate status, metrics, and the audit -> suggest -> enforce round trip (issue 20) ----------------------

/// A running `bpfgate enforce` with its log collected, started under `$NOTIFY_SOCKET` and waited for until
/// READY=1.
struct Daemon {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    socket: UnixDatagram,
}

impl Daemon {
    fn start(dir: &std::path::Path, args: &[&str], stdout: Stdio) -> Daemon {
        let notify = dir.join(format!("notify-{}", args.len()));
        let _ = std::fs::remove_file(&notify);
        let socket = UnixDatagram::bind(&notify).unwrap();
        let mut child = Command::new(CLI)
            .arg("enforce")
            .args(args)
            .env("NOTIFY_SOCKET", &notify)
            .stdout(stdout)
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
        let ready = next_notification(&socket, &log);
        assert!(ready.starts_with("READY=1\n"), "{ready}");
        Daemon { child, log, reader: Some(reader), socket }
    }

    /// The first log line `pick` takes, waiting for the reader thread (the daemon wrote it before READY=1, but
    /// the pipe may not have been read yet).
    fn log_line(&self, pick: impl Fn(&str) -> Option<String>) -> String {
        let start = Instant::now();
        loop {
            if let Some(v) = self.log.lock().unwrap().iter().find_map(|l| pick(l)) {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "not in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits; the exit status and the log.
    fn stop(self) -> (std::process::ExitStatus, String) {
        self.terminate();
        self.wait()
    }

    /// Sends SIGTERM (the daemon says STOPPING=1 on its socket, then exits).
    fn terminate(&self) {
        // SAFETY: kill has no memory preconditions; the child is ours and not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    }

    /// Waits for the exit; its status and the log.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.log())
    }
}

/// A test that fails midway must not leave its daemon's gate attached for the next tests.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const CLI: &str = "/usr/bin/bpfgate";

/// Brings the loopback interface up (the VM's init leaves it down): SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP.
fn loopback_up() {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a zeroed ifreq is valid; the name is "lo" NUL-terminated; the ioctls read and write only it.
    let rc = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req);
        }
        libc::close(fd);
        rc
    };
    assert_eq!(rc, 0, "bringing lo up: {}", std::io::Error::last_os_error());
}

/// Whether the `bpfgate` binary is here (the VM harness installs it); says SKIPPED otherwise.
fn have_cli(test: &str) -> bool {
    if std::path::Path::new(CLI).is_file() {
        return true;
    }
    assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness installs {CLI}");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED {test}: no {CLI}\n").as_bytes());
    false
}

/// `bpfgate status --json`: its exit code and the parsed object.
fn status_json() -> (Option<i32>, serde_json::Value) {
    let out = Command::new(CLI).args(["status", "--json"]).output().expect("running bpfgate status");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("bpfgate status --json printed no JSON ({e}):\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code(), value)
}

/// `r0 = 0; exit`: no class; Err(errno) when refused.
fn load_ok(name: &str) -> Result<(), i32> {
    load_socket_filter(name).map(drop).map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// A kprobe program that calls send_signal (helper 109): class send_signal, which the test policies deny.
fn load_signal() -> Result<(), i32> {
    use bpfgate_test_support::insn::{call_helper, exit, mov_imm};
    // A kprobe program, where the verifier accepts send_signal: the gate's refusal is what the test sees on every
    // kernel (on 6.1 the gate decides after verification, and a socket filter would fail there first).
    let insns = [mov_imm(1, 10), call_helper(109), mov_imm(0, 0), exit()];
    let fd = crate::gate::load_typed_fd(libbpf_rs::libbpf_sys::BPF_PROG_TYPE_KPROBE, "ops_signal", &insns)?;
    // SAFETY: a fresh fd we own.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The counts of `rule` in a status object's `rules`: (loads allowed, loads denied).
fn rule_loads(status: &serde_json::Value, rule: &str) -> (u64, u64) {
    let r = status["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
        .unwrap_or_else(|| panic!("no rule {rule} in {status:#}"));
    (r["loads"]["allowed"].as_u64().unwrap(), r["loads"]["denied"].as_u64().unwrap())
}

/// This test binary may load anything but send_signal; an executable that does not exist has a rule too.
fn status_policy() -> String {
    let exe = this_exe();
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: absent-agent\n    subject:\n      exe: /usr/bin/bpfgate-ops-absent\n    \
         action: deny\n  - name: this-test\n    subject:\n      exe: {exe}\n    capabilities:\n      deny: [send_signal]\n"
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A plain HTTP GET from the test; the response's body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// `bpfgate status` and `--metrics` against a gate bound to its daemon: the policy (path, digest, generation,
/// unresolved executables), the hooks, and counters that follow loads allowed and denied.
#[test]
fn gate_cli_status_and_metrics_of_an_fd_bound_gate() {
    let Some(_guard) = live("gate_cli_status_and_metrics_of_an_fd_bound_gate") else { return };
    if !have_cli("gate_cli_status_and_metrics_of_an_fd_bound_gate") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bpfgate-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, status_policy()).unwrap();
    loopback_up();
    let (before_code, _) = status_json();

    let daemon =
        Daemon::start(&dir, &["--metrics", "127.0.0.1:0", "--policy", policy.to_str().unwrap()], Stdio::null());
    let addr =
        daemon.log_line(|l| Some(l.strip_prefix("bpfgate: metrics at http://")?.strip_suffix("/metrics")?.to_owned()));
    // libbpf probes the kernel with a few loads of its own at this process's first load: done before counting.
    let warm_up = load_ok("ops_warm_up");
    let (code, first) = status_json();
    let allowed = [load_ok("ops_ok_1"), load_ok("ops_ok_2")];
    let denied = load_signal();
    let (_, second) = status_json();
    let text = Command::new(CLI).arg("status").output().unwrap();
    // The class counts come from the events the daemon reads (every 100 ms): wait for the denial's.
    let class_line = "bpfgate_load_classes_total{rule=\"this-test\",action=\"denied\",class=\"send_signal\"} 1";
    let scraped = Instant::now();
    let metrics = loop {
        let m = http_get(&addr, "/metrics");
        if m.lines().any(|l| l == class_line) || scraped.elapsed() > Duration::from_secs(60) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, log) = daemon.stop();
    let (after_code, after) = status_json();
    std::fs::remove_dir_all(&dir).unwrap();

    report!("status before: exit {before_code:?}; while enforcing: exit {code:?}\n{first:#}\nafter loads:\n{second:#}");
    report!("metrics:\n{metrics}");
    assert_eq!(before_code, Some(1), "no gate before the daemon");
    assert_eq!(code, Some(0), "{first:#}\n{log}");
    assert_eq!(first["found"], true);
    assert_eq!(first["attached"], true);
    assert_eq!(first["mode"], "fd-bound");
    assert_eq!(first["daemon"]["running"], true);
    assert_eq!(first["pin_dir"], serde_json::Value::Null);
    let hooks: Vec<&str> = first["hooks"].as_array().unwrap().iter().map(|h| h["hook"].as_str().unwrap()).collect();
    // The hooks of the kernel's variant (gate.rs `attach`): the pin note's fexit/fentry pair, the link guard where
    // the probe asks for it, then six LSM or fentry hooks (seven on 6.1).
    let legacy = hooks.contains(&"fentry/bpf_check");
    let guard = hooks.contains(&"lsm/bpf");
    assert_eq!(hooks.len(), 8 + usize::from(legacy) + usize::from(guard), "{hooks:?}");
    let scan = if legacy { "fentry/bpf_check" } else { "lsm/bpf_prog_load" };
    for hook in ["lsm/bpf_prog", "lsm/bpf_map", "fentry/bpf_obj_get_user", "fexit/bpf_obj_get_user", scan] {
        assert!(hooks.contains(&hook), "{hook} missing from {hooks:?}");
    }
    assert!(first["hooks"].as_array().unwrap().iter().all(|h| h["attached"] == true));
    let p = &first["policy"];
    assert_eq!(p["path"], policy.to_str().unwrap());
    assert_eq!(p["sha256"], sha256_hex(status_policy().as_bytes()));
    assert_eq!(p["generation"], 1);
    assert_eq!(p["mode"], "enforce");
    assert!(p["loaded_at"].as_str().unwrap().ends_with('Z'), "{p}");
    assert_eq!(p["unresolved"], serde_json::json!(["/usr/bin/bpfgate-ops-absent"]));
    let (before, counted) = (rule_loads(&first, "this-test"), rule_loads(&second, "this-test"));
    assert_eq!(warm_up, Ok(()));
    assert!(before.0 >= 1 && before.1 == 0, "the warm-up load (and libbpf's probes) allowed: {before:?}");

    assert_eq!(allowed, [Ok(()), Ok(())]);
    assert_eq!(denied, Err(libc::EPERM));
    assert_eq!((counted.0 - before.0, counted.1 - before.1), (2, 1), "{second:#}");
    assert_eq!(rule_loads(&second, "absent-agent"), (0, 0));
    assert_eq!(second["dropped_events"], 0);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("gate: attached (fd-bound"), "{text}");
    assert!(text.contains("unresolved executables (their rules cannot match): /usr/bin/bpfgate-ops-absent"), "{text}");

    for line in [
        &format!("bpfgate_decisions_total{{rule=\"this-test\",kind=\"load\",action=\"allowed\"}} {}", counted.0),
        "bpfgate_decisions_total{rule=\"this-test\",kind=\"load\",action=\"denied\"} 1",
        "bpfgate_decisions_total{rule=\"absent-agent\",kind=\"load\",action=\"denied\"} 0",
        class_line,
        "bpfgate_dropped_events_total 0",
        "bpfgate_policy_generation 1",
        "bpfgate_attached 1",
        "bpfgate_policy_unresolved_executables 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no line {line:?} in the metrics:\n{metrics}");
    }
    assert!(status.success(), "{status}\n{log}");
    // An fd-bound gate goes with its daemon.
    assert_eq!(after_code, Some(1), "{after:#}");
}

/// `bpfgate status` against a persisted gate after its daemon exited: still attached, the daemon gone, and the
/// counters still counting loads nobody reports; after `--stop`, no gate.
#[test]
fn gate_cli_status_of_a_persisted_gate_without_its_daemon() {
    let Some(_guard) = live("gate_cli_status_of_a_persisted_gate_without_its_daemon") else { return };
    if !have_cli("gate_cli_status_of_a_persisted_gate_without_its_daemon") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bpfgate-persisted-{}", std::process::id()));
    let pins = format!("/sys/fs/bpf/bpfgate-ops-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, status_policy()).unwrap();

    let daemon =
        Daemon::start(&dir, &["--persist", "--pin-dir", &pins, "--policy", policy.to_str().unwrap()], Stdio::null());
    let denied_while_running = load_signal();
    let (status, log) = daemon.stop();
    let (code, first) = status_json();
    let after_exit = [load_signal(), load_signal(), load_ok("ops_ok")];
    let (_, second) = status_json();
    let text = Command::new(CLI).arg("status").output().unwrap();
    let stop = Command::new(CLI).args(["enforce", "--stop", "--pin-dir", &pins]).output().unwrap();
    let (stopped_code, stopped) = status_json();
    std::fs::remove_dir_all(&dir).unwrap();

    report!("persisted, daemon gone: exit {code:?}\n{first:#}\nafter three more loads:\n{second:#}");
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(denied_while_running, Err(libc::EPERM));
    assert_eq!(code, Some(0), "{first:#}");
    assert_eq!(first["attached"], true);
    assert_eq!(first["mode"], "persisted");
    assert_eq!(first["pin_dir"], pins.as_str());
    assert_eq!(first["daemon"]["running"], false);
    assert_eq!(first["policy"]["generation"], 1);
    assert_eq!(first["policy"]["path"], policy.to_str().unwrap());
    assert_eq!(rule_loads(&first, "this-test"), (0, 1));
    assert_eq!(after_exit, [Err(libc::EPERM), Err(libc::EPERM), Ok(())]);
    assert_eq!(rule_loads(&second, "this-test"), (1, 3), "{second:#}");
    assert_eq!(second["dropped_events"], 0, "three events fit in the ring buffer");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with(&format!("gate: attached (persisted in {pins})")), "{text}");
    assert!(text.contains("not running"), "{text}");
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    assert_eq!(stopped_code, Some(1), "no gate attached after --stop: {stopped:#}");
    assert_eq!(stopped["attached"], false);
}

/// The rollout: an audit run of a real client (Debian's bpftrace) -> `policy suggest` -> enforce the suggestion:
/// the same loads pass, and the same client's program with one class more (send_signal) is denied.
#[test]
fn gate_cli_suggest_round_trip_with_bpftrace() {
    let Some(_guard) = live("gate_cli_suggest_round_trip_with_bpftrace") else { return };
    if !have_cli("gate_cli_suggest_round_trip_with_bpftrace") {
        return;
    }
    let bpftrace = "/usr/bin/bpftrace";
    assert!(std::path::Path::new(bpftrace).exists(), "{bpftrace} is not in this system; the VM harness installs it");
    let dir = std::env::temp_dir().join(format!("bpfgate-suggest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.yaml");
    std::fs::write(&audit, "version: 1\nmode: audit\ndefault: deny\nrules: []\n").unwrap();
    let counting = ["-e", "kprobe:do_nanosleep { @[comm] = count(); exit(); }"];
    let bpftrace_run = |args: &[&str]| {
        crate::gate::run_with_timeout(Command::new(bpftrace).args(args), Duration::from_secs(180), || {
            std::thread::sleep(Duration::from_millis(10));
        })
    };

    // 1. Audit: everything is allowed and reported.
    let events = dir.join("events.jsonl");
    let out = std::fs::File::create(&events).unwrap();
    let daemon = Daemon::start(&dir, &["--json", "--policy", audit.to_str().unwrap()], Stdio::from(out));
    let audited = bpftrace_run(&counting);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(audited.0, Some(0), "bpftrace under audit: {audited:?}");

    // 2. Suggest, then enforce what was suggested.
    let suggested = dir.join("suggested.yaml");
    let suggest = Command::new(CLI)
        .args(["policy", "suggest", "--without-cgroup", "--events"])
        .arg(&events)
        .arg("-o")
        .arg(&suggested)
        .output()
        .unwrap();
    assert!(suggest.status.success(), "suggest: {}", String::from_utf8_lossy(&suggest.stderr));
    let text = std::fs::read_to_string(&suggested).unwrap();
    report!("suggested from {} events:\n{text}", std::fs::read_to_string(&events).unwrap().lines().count());
    assert!(text.contains(&format!("exe: \"{bpftrace}\"")), "no rule for bpftrace:\n{text}");
    let enforce = dir.join("enforce.yaml");
    std::fs::write(&enforce, text.replace("\nmode: audit\n", "\nmode: enforce\n")).unwrap();

    let events2 = dir.join("events2.jsonl");
    let out = std::fs::File::create(&events2).unwrap();
    let daemon = Daemon::start(&dir, &["--json", "--policy", enforce.to_str().unwrap()], Stdio::from(out));
    let same = bpftrace_run(&counting);
    let more = bpftrace_run(&["--unsafe", "-e", "kprobe:do_nanosleep { signal(\"KILL\"); }"]);
    let (status, log) = daemon.stop();
    let decisions: Vec<serde_json::Value> =
        std::fs::read_to_string(&events2).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    std::fs::remove_dir_all(&dir).unwrap();

    let from_bpftrace: Vec<&serde_json::Value> =
        decisions.iter().filter(|e| e["comm"].as_str().is_some_and(|c| c.starts_with("bpftrace"))).collect();
    for e in &from_bpftrace {
        report!("enforced: {} {} {} rule {} {}", e["op"], e["name"], e["verdict"], e["rule_name"], e["classes"]);
    }
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(same.0, Some(0), "the audited bpftrace run must pass under the suggested policy: {same:?}");
    assert!(more.0.is_some_and(|c| c != 0), "bpftrace with signal() must fail: {more:?}");
    let denied_signal = from_bpftrace.iter().any(|e| {
        e["verdict"] == "deny" && e["classes"].as_array().is_some_and(|c| c.iter().any(|c| c["class"] == "send_signal"))
    });
    assert!(denied_signal, "no denial of bpftrace's send_signal program");
    assert!(
        !from_bpftrace.iter().any(|e| e["verdict"] == "deny"
            && !e["classes"].as_array().is_some_and(|c| c.iter().any(|c| c["class"] == "send_signal"))),
        "only the program with the extra class may be denied"
    );
}
