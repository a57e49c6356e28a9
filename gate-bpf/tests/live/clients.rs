//! Real clients no one here wrote, under the shipped example policies (issue 17): Debian's libbpf-tools and
//! bpftrace's .bt tools under `examples/policies/observability.yaml`, unsafe bpftrace scripts denied with events
//! naming their class. The VM harness puts the packages' programs into the guest (xtask's GUEST_PACKAGES).
//!
//! Each tool runs briefly under the enforced policy: until it prints its first line (its programs are loaded and
//! attached by then), then SIGINT. A tool that fails is run again with the policy in audit mode: if it fails
//! there too it cannot work on this guest (a missing module, PMU, file system, argument) and is reported not
//! applicable with its last line of stderr; if it runs there, the gate refused it, which fails the test.
//! The table of outcomes is printed per kernel (`CLIENTS` lines in the VM log).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bpfgate::metadata::Capability;
use bpfgate::policy::{compiled, Policy};
use bpfgate_gate::event::{Event, RawEvent, OP_PROG_LOAD, OP_PROG_MAPS, VERDICT_DENY};
use bpfgate_gate::{EventStream, Gate, HostResolver};

use super::live;

const OBSERVABILITY: &str = include_str!("../../../examples/policies/observability.yaml");

/// A tool is waited for, until it prints that it is tracing, as long as it works towards that: it used at least
/// [`BUSY`] of the CPU over the last [`WINDOW`] (loading a bpftrace script under TCG is CPU-bound for tens of
/// seconds, longer in wall time on a loaded host: a 45 s wall-clock limit failed runs on a host running five
/// guests). A tool that has loaded and traces without printing polls at a percent or so: it has started as far as
/// it will. [`CPU_BUDGET`] ends one that spins.
const WINDOW: Duration = Duration::from_secs(10);
const BUSY: Duration = Duration::from_secs(2);
const CPU_BUDGET: Duration = Duration::from_secs(300);
/// After SIGINT, how long a tool that is not busy may take to exit before it is killed (detaching, printing maps).
const EXIT: Duration = Duration::from_secs(15);

/// The CPU time (user and system) process `pid` has used so far, all its threads together; None once it is gone.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses): state is the first field, utime the 12th
    // and stime the 13th (proc(5) fields 3, 14 and 15), in clock ticks.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Whether a running child is busy: at least [`BUSY`] of CPU in the [`WINDOW`] that ended last, and under
/// [`CPU_BUDGET`] in all. A starved guest charges its lost time to the task it ran, so a CPU-bound tool stays busy
/// however loaded the host is.
struct Progress {
    pid: u32,
    cpu: Duration,
    since: Instant,
}

impl Progress {
    fn new(pid: u32) -> Progress {
        Progress { pid, cpu: cpu_time(pid).unwrap_or_default(), since: Instant::now() }
    }

    fn busy(&mut self) -> bool {
        let Some(cpu) = cpu_time(self.pid) else { return false };
        if cpu >= CPU_BUDGET {
            return false;
        }
        if self.since.elapsed() < WINDOW {
            return true;
        }
        let busy = cpu.saturating_sub(self.cpu) >= BUSY;
        (self.cpu, self.since) = (cpu, Instant::now());
        busy
    }
}

/// Arguments for tools that need some to run at all.
fn args_of(tool: &str) -> &'static [&'static str] {
    match tool {
        "funclatency" => &["do_nanosleep"],
        "ksnoop" => &["trace", "do_nanosleep"],
        // The guest's root is the initramfs (tmpfs); ext4 is what a real host would name.
        "fsdist" | "fsslower" => &["-t", "ext4"],
        _ => &[],
    }
}

struct Client {
    gate: Gate,
    stream: EventStream,
    enforce: compiled::CompiledPolicy,
    audit: compiled::CompiledPolicy,
}

impl Client {
    fn new(policy: &str) -> Client {
        let mut gate = Gate::load().unwrap_or_else(|e| panic!("loading the gate: {e:#}"));
        gate.attach().unwrap_or_else(|e| panic!("attaching the gate: {e:#}"));
        let stream = gate.events().unwrap_or_else(|e| panic!("opening the event stream: {e:#}"));
        let compile = |text: &str| {
            let p = Policy::parse("observability.yaml", text).unwrap_or_else(|e| panic!("{e}"));
            compiled::compile(&p, 1).unwrap_or_else(|e| panic!("{e}"))
        };
        let audit = compile(&policy.replacen("mode: enforce", "mode: audit", 1));
        Client { gate, stream, enforce: compile(policy), audit }
    }

    fn install(&mut self, audit: bool) {
        let c = if audit { &self.audit } else { &self.enforce };
        self.gate.install(c, &HostResolver::new(), false).unwrap_or_else(|e| panic!("installing: {e:#}"));
        self.take();
    }

    fn take(&mut self) -> Vec<RawEvent> {
        self.stream.drain().unwrap_or_else(|e| panic!("reading events: {e:#}"))
    }

    fn describe(&self, e: &RawEvent) -> String {
        Event::from_raw(e, self.gate.names()).to_string()
    }
}

/// How one run went.
struct Run {
    /// It printed a line and was still running, or exited 0.
    started: bool,
    /// What it said last on stderr (or its exit status).
    why: String,
}

fn comm_of(e: &RawEvent) -> String {
    let end = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    String::from_utf8_lossy(&e.comm[..end]).into_owned()
}

/// A pseudo-terminal: (master, slave). Tools write to a terminal line by line (to a pipe, stdio buffers
/// until exit), so the first line says when they are tracing.
fn pty() -> Option<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointers; name, termios and winsize may be NULL.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    // SAFETY: on success both are fresh fds that we own from here on.
    (r == 0).then(|| unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) })
}

/// Runs `cmd` until it prints a line that says it is tracing (or exits, or is no longer busy: [`Progress`]),
/// then SIGINT. bpftrace's "Attaching N probes..." comes before it loads: the line after it counts.
fn run_briefly(cmd: &mut Command) -> Run {
    let Some((master, slave)) = pty() else { return Run { started: false, why: "no pty".into() } };
    let spawned = cmd.stdin(Stdio::null()).stdout(Stdio::from(slave)).stderr(Stdio::piped()).spawn();
    // The slave end is the child's now (our copy went into the Command, dropped with it below).
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => return Run { started: false, why: format!("cannot run: {e}") },
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Ends with EIO once the child's side is closed.
        for line in BufReader::new(master).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let begin = Instant::now();
    let mut printed = false;
    let mut progress = Progress::new(child.id());
    loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.starts_with("Attaching ") || line.trim().is_empty() {
                continue;
            }
            printed = true;
            break;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || !progress.busy() {
            break;
        }
    }
    let running = matches!(child.try_wait(), Ok(None));
    if running {
        // SAFETY: kill has no memory preconditions; the pid is our child's, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    // Its exit is waited for while it is busy, or for EXIT.
    let (mut progress, stop) = (Progress::new(child.id()), Instant::now());
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if stop.elapsed() < EXIT || progress.busy() => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    let stderr = err_reader.join().unwrap_or_default();
    let started = (printed && running) || status.is_some_and(|s| s.success());
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    let why = if last.is_empty() {
        format!("{status:?}, no output in {:?}", begin.elapsed())
    } else {
        last.chars().take(110).collect()
    };
    Run { started, why }
}

/// One client's outcome, for the table.
struct Outcome {
    client: String,
    /// allowed, denied (reason), not applicable (reason)
    result: String,
    ok: bool,
}

/// Runs `cmd` under the enforced policy, and once more in audit mode when it fails; `comm` picks its events.
fn judge(c: &mut Client, client: &str, comm: &str, mut cmd: impl FnMut() -> Command) -> Outcome {
    let run = run_briefly(&mut cmd());
    let events: Vec<RawEvent> = c.take().into_iter().filter(|e| comm.starts_with(&comm_of(e))).collect();
    let loads = events.iter().filter(|e| e.op == OP_PROG_LOAD).count();
    let denied: Vec<&RawEvent> =
        events.iter().filter(|e| matches!(e.op, OP_PROG_LOAD | OP_PROG_MAPS) && e.verdict == VERDICT_DENY).collect();
    for e in &denied {
        report!("{client}: {}", c.describe(e));
    }
    let denied_reasons = {
        let mut v: Vec<String> = denied
            .iter()
            .map(|e| {
                let ev = Event::from_raw(e, c.gate.names());
                let classes: Vec<String> = ev.classes.iter().map(|k| k.class.to_string()).collect();
                format!("{} {} [{}] classes {}", ev.prog_type, ev.name, ev.reasons.join(","), classes.join(","))
            })
            .collect();
        v.dedup();
        v.join("; ")
    };
    if run.started && denied.is_empty() {
        return Outcome { client: client.into(), result: format!("allowed ({loads} loads)"), ok: true };
    }
    if run.started {
        return Outcome {
            client: client.into(),
            result: format!("runs, but {} loads denied: {denied_reasons}", denied.len()),
            ok: false,
        };
    }
    c.install(true);
    let audit = run_briefly(&mut cmd());
    let audit_events = c.take();
    c.install(false);
    if audit.started {
        let r = if denied.is_empty() { format!("fails only when enforced: {}", run.why) } else { denied_reasons };
        return Outcome { client: client.into(), result: format!("denied ({r})"), ok: false };
    }
    let audited = audit_events.iter().filter(|e| comm.starts_with(&comm_of(e)) && e.op == OP_PROG_LOAD).count();
    Outcome {
        client: client.into(),
        result: format!("not applicable ({}; {audited} loads in audit mode)", audit.why),
        ok: true,
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

fn print_table(title: &str, rows: &[Outcome]) {
    let k = kernel();
    report!("CLIENTS {title} on {k}:");
    for r in rows {
        report!("CLIENTS | {k} | {} | {} |", r.client, r.result);
    }
}

/// Every libbpf-tools program the observability example names runs under it, or is not applicable here.
#[test]
fn clients_libbpf_tools_under_the_observability_example() {
    let Some(_guard) = live("clients_libbpf_tools_under_the_observability_example") else { return };
    let policy = Policy::parse("observability.yaml", OBSERVABILITY).expect("the example parses");
    let rule = policy.rules.iter().find(|r| r.name == "libbpf-tools").expect("a libbpf-tools rule");
    let tools: Vec<String> = rule.subject.exe.iter().map(|e| e.value.clone()).collect();
    let mut c = Client::new(OBSERVABILITY);
    c.install(false);
    let mut rows = Vec::new();
    for path in &tools {
        let name = path.rsplit('/').next().unwrap_or(path).to_owned();
        if !std::path::Path::new(path).exists() {
            rows.push(Outcome { client: name, result: "not applicable (not in the guest)".into(), ok: false });
            continue;
        }
        let comm: String = name.chars().take(15).collect();
        let row = judge(&mut c, &name, &comm, || {
            let mut cmd = Command::new(path);
            cmd.args(args_of(&name));
            cmd
        });
        report!("libbpf-tools {name}: {}", row.result);
        rows.push(row);
    }
    print_table("libbpf-tools under examples/policies/observability.yaml", &rows);
    let allowed = rows.iter().filter(|r| r.result.starts_with("allowed")).count();
    let bad: Vec<String> = rows.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.client, r.result)).collect();
    assert!(bad.is_empty(), "{} tools refused:\n{}", bad.len(), bad.join("\n"));
    assert!(allowed >= tools.len() / 2, "only {allowed} of {} tools ran", tools.len());
}

/// The .bt tools of Debian's bpftrace package run under the observability example (or are not applicable);
/// unsafe scripts are denied with events naming the class.
#[test]
fn clients_bpftrace_tools_under_the_observability_example() {
    let Some(_guard) = live("clients_bpftrace_tools_under_the_observability_example") else { return };
    let mut scripts: Vec<String> = std::fs::read_dir("/usr/sbin")
        .map(|d| d.flatten().map(|e| e.path().display().to_string()).filter(|p| p.ends_with(".bt")).collect())
        .unwrap_or_default();
    scripts.sort();
    assert!(scripts.len() >= 30, "the guest has {} .bt tools", scripts.len());
    let mut c = Client::new(OBSERVABILITY);
    c.install(false);
    let mut rows = Vec::new();
    for script in &scripts {
        let name = script.rsplit('/').next().unwrap_or(script).to_owned();
        let row = judge(&mut c, &name, "bpftrace", || {
            let mut cmd = Command::new("/usr/bin/bpftrace");
            cmd.arg(script);
            cmd
        });
        report!("bpftrace {name}: {}", row.result);
        rows.push(row);
    }
    // Unsafe scripts: refused by the gate, with the class in the event.
    for (name, program, class) in [
        ("signal()", r#"kprobe:do_nanosleep { signal("KILL"); }"#, Capability::SendSignal),
        ("override()", "kprobe:__x64_sys_getppid { override(-1); }", Capability::OverrideReturn),
    ] {
        let run = run_briefly(Command::new("/usr/bin/bpftrace").args(["--unsafe", "-e", program]));
        let events = c.take();
        let denials: Vec<&RawEvent> = events
            .iter()
            .filter(|e| comm_of(e) == "bpftrace" && e.verdict == VERDICT_DENY && e.classes & class.bit() != 0)
            .collect();
        for e in &denials {
            report!("bpftrace {name}: {}", c.describe(e));
        }
        let ok = !run.started && !denials.is_empty();
        let result = if ok {
            format!("denied ({class}: {})", Event::from_raw(denials[0], c.gate.names()).reasons.join(","))
        } else {
            format!(
                "NOT denied as expected: started {}, {} denials naming {class}; {}",
                run.started,
                denials.len(),
                run.why
            )
        };
        report!("bpftrace --unsafe {name}: {result}");
        rows.push(Outcome { client: format!("bpftrace --unsafe {name}"), result, ok });
    }
    print_table("bpftrace tools under examples/policies/observability.yaml", &rows);
    let bad: Vec<String> = rows.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.client, r.result)).collect();
    assert!(bad.is_empty(), "{} clients not as expected:\n{}", bad.len(), bad.join("\n"));
}

const NETWORK_AGENT: &str = include_str!("../../../examples/policies/network-agent.yaml");
const NET_AGENT: &[u8] = include_bytes!("../../../tests/fixtures/net_agent.bpf.o");
const NET_AGENT_WRITE_USER: &[u8] = include_bytes!("../../../tests/fixtures/net_agent_write_user.bpf.o");

/// Runs `argv` to completion: (success, last line of stderr).
fn run(argv: &[&str]) -> (bool, String) {
    match Command::new(argv[0]).args(&argv[1..]).stdin(Stdio::null()).output() {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
            (out.status.success(), tail.chars().take(400).collect())
        }
        Err(e) => (false, format!("cannot run {}: {e}", argv[0])),
    }
}

/// Removes what the loads pinned: iproute2's maps (/sys/fs/bpf/tc/globals; xdp and ip link to tc), bpftool's
/// programs and the maps libbpf pinned by name at the default root.
fn clear_pins() {
    for dir in ["/sys/fs/bpf/tc", "/sys/fs/bpf/netagent_progs"] {
        let _ = std::fs::remove_dir_all(dir);
    }
    for link in ["/sys/fs/bpf/xdp", "/sys/fs/bpf/ip"] {
        let _ = std::fs::remove_file(link).or_else(|_| std::fs::remove_dir_all(link));
    }
    for map in ["net_counts", "net_tc_jmp", "net_xdp_jmp"] {
        let _ = std::fs::remove_file(format!("/sys/fs/bpf/{map}"));
    }
}

/// The maps pinned under bpffs, as paths relative to it.
fn pinned_maps() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["/sys/fs/bpf", "/sys/fs/bpf/tc/globals"] {
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("net_") {
                    out.push(format!("{}/{name}", dir.trim_start_matches("/sys/fs/bpf").trim_start_matches('/')));
                }
            }
        }
    }
    out
}

/// tc and XDP programs with tail calls and pinned maps, loaded by iproute2 (`tc filter add ... bpf`,
/// `ip link set ... xdpgeneric`) and by `bpftool prog loadall` under the network-agent example: allowed; the
/// same object with a bpf_probe_write_user added: denied, the events naming user_write.
#[test]
fn clients_network_tools_under_the_network_agent_example() {
    let Some(_guard) = live("clients_network_tools_under_the_network_agent_example") else { return };
    let dir = std::env::temp_dir();
    let good = dir.join("net_agent.bpf.o");
    let bad = dir.join("net_agent_write_user.bpf.o");
    std::fs::write(&good, NET_AGENT).expect("writing the object");
    std::fs::write(&bad, NET_AGENT_WRITE_USER).expect("writing the object");
    let mut c = Client::new(NETWORK_AGENT);
    c.install(false);
    let _ = run(&["/usr/sbin/ip", "link", "set", "dev", "lo", "up"]);
    let qdisc = run(&["/usr/sbin/tc", "qdisc", "add", "dev", "lo", "clsact"]);
    report!("tc qdisc add dev lo clsact: {qdisc:?}");
    let mut rows = Vec::new();
    for (label, obj, want_allowed) in [("net_agent.bpf.o", &good, true), ("+ bpf_probe_write_user", &bad, false)] {
        let obj = obj.display().to_string();
        clear_pins();
        let clients: [(&str, &str, Vec<&str>, Vec<&str>); 3] = [
            (
                "tc filter add ... bpf",
                "tc",
                vec!["/usr/sbin/tc", "filter", "add", "dev", "lo", "ingress", "bpf", "da", "obj", &obj, "sec", "tc"],
                vec!["/usr/sbin/tc", "filter", "del", "dev", "lo", "ingress"],
            ),
            (
                "ip link set ... xdpgeneric",
                "ip",
                vec!["/usr/sbin/ip", "link", "set", "dev", "lo", "xdpgeneric", "obj", &obj, "sec", "xdp"],
                vec!["/usr/sbin/ip", "link", "set", "dev", "lo", "xdpgeneric", "off"],
            ),
            (
                "bpftool prog loadall",
                "bpftool",
                // The maps pin themselves by name (LIBBPF_PIN_BY_NAME) at libbpf's default root.
                vec!["/usr/sbin/bpftool", "prog", "loadall", &obj, "/sys/fs/bpf/netagent_progs"],
                vec![],
            ),
        ];
        for (client, comm, load, undo) in clients {
            // Each tool its own maps: tc and ip share iproute2's pin directory, and a map one of them pinned is
            // not the other's own (the rule says `write: own`; the gate refuses the other a writable fd).
            clear_pins();
            let (ok, why) = run(&load);
            let events: Vec<RawEvent> = c.take().into_iter().filter(|e| comm_of(e) == comm).collect();
            let loads: Vec<&RawEvent> = events.iter().filter(|e| matches!(e.op, OP_PROG_LOAD | OP_PROG_MAPS)).collect();
            for e in &loads {
                report!("{client} {label}: {}", c.describe(e));
            }
            let denied: Vec<&RawEvent> = loads.iter().copied().filter(|e| e.verdict == VERDICT_DENY).collect();
            let pinned = pinned_maps();
            let (result, good) = if ok && denied.is_empty() && !loads.is_empty() {
                (format!("allowed ({} loads; pinned maps: {})", loads.len(), pinned.join(" ")), want_allowed)
            } else if !ok && !denied.is_empty() {
                let names: Vec<String> = denied
                    .iter()
                    .map(|e| {
                        let ev = Event::from_raw(e, c.gate.names());
                        let classes: Vec<String> = ev.classes.iter().map(|k| k.class.to_string()).collect();
                        format!("{} [{}] {}", ev.name, ev.reasons.join(","), classes.join(","))
                    })
                    .collect();
                let user_write = denied.iter().all(|e| e.classes & Capability::UserWrite.bit() != 0);
                (format!("denied ({})", names.join("; ")), !want_allowed && user_write)
            } else {
                (format!("failed: exit ok {ok}, {} loads, {} denied: {why}", loads.len(), denied.len()), false)
            };
            report!("{client} {label}: {result}");
            rows.push(Outcome { client: format!("{client}, {label}"), result, ok: good });
            if !undo.is_empty() {
                let _ = run(&undo);
            }
            c.take();
        }
    }
    clear_pins();
    print_table("iproute2 and bpftool under examples/policies/network-agent.yaml", &rows);
    let bad: Vec<String> = rows.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.client, r.result)).collect();
    assert!(bad.is_empty(), "{} clients not as expected:\n{}", bad.len(), bad.join("\n"));
}
