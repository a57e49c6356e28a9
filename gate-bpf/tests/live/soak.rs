//! Soak (issue 19): `bpfgate enforce --json` under a stream of loads (allowed, denied, refused by the verifier),
//! map creations and frees, program unloads, fd-by-id opens, opens through a pin and policy reloads, for
//! `BPFGATE_SOAK_SECS` seconds (default 60; CI runs the default, a long run sets more, e.g. through `cargo xtask
//! vmtest --exec`). At the end:
//! - every gate map that tracks objects (`pending_loads`, `loaded_progs`, `map_owners`, `gate_objects`,
//!   `thread_cmds`) holds what it held before the stream started (the kernel frees maps and programs from
//!   deferred work, so the count is awaited, bounded);
//! - the daemon's resident set did not grow after warm-up beyond `RSS_SLACK_KIB`;
//! - no event was dropped (a reader keeps up with the daemon's output), and the gate's dropped counter is 0;
//! - every decision is the one the policy in force prescribes: each syscall's result, and each load event's
//!   verdict and generation, counted per program name, generation and verdict against what the test did.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bpfgate_test_support::insn::{call_helper, exit, mov_imm, Insn};
use libbpf_rs::libbpf_sys;

use crate::gate::{create_map, fd_result, load_typed_fd, map_fd_by_id, obj_id, this_exe};
use crate::live;

/// Seconds of load stream; the environment variable overrides the default.
const SOAK_ENV: &str = "BPFGATE_SOAK_SECS";
const SOAK_DEFAULT_SECS: u64 = 60;
/// Iterations between policy reloads.
const RELOAD_EVERY: u64 = 25;
/// Programs kept loaded at once; the oldest is unloaded when a new one is kept.
const KEEP_PROGS: usize = 16;
/// How much the daemon's RSS may grow from the end of warm-up (a tenth of the run) to the end.
const RSS_SLACK_KIB: u64 = 1024;
/// The gate maps that must come back to their baseline.
const TRACKED: [&str; 5] = ["pending_loads", "loaded_progs", "map_owners", "gate_objects", "thread_cmds"];

/// Socket filters denied (only kprobes for this executable) or allowed; send_signal denied in both.
fn policy(filters: bool) -> String {
    let types = if filters { "[kprobe, socket_filter]" } else { "[kprobe]" };
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: soak-{}\n    subject:\n      exe: {}\n    prog_types: {types}\n    \
         capabilities:\n      deny: [send_signal]\n",
        if filters { "filters" } else { "kprobes" },
        this_exe()
    )
}

/// The newest map of each tracked name (the daemon's gate is the newest: earlier tests' gates are gone or
/// going), found by id and opened read-only, which the gate gives anyone.
fn gate_maps() -> BTreeMap<&'static str, i32> {
    let mut newest: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut id = 0u32;
    // SAFETY (loop): the id pointers are valid u32s.
    while unsafe { libbpf_sys::bpf_map_get_next_id(id, &mut id) } == 0 {
        let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
        if fd < 0 {
            continue; // freed meanwhile
        }
        let mut info = libbpf_sys::bpf_map_info::default();
        let mut len = size_of::<libbpf_sys::bpf_map_info>() as u32;
        // SAFETY: info is a writable bpf_map_info of len bytes.
        let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd, &mut info, &mut len) };
        fd_result(fd);
        if rc != 0 {
            continue;
        }
        let end = info.name.iter().position(|&c| c == 0).unwrap_or(info.name.len());
        let name: Vec<u8> = info.name[..end].iter().map(|&c| c as u8).collect();
        if let Some(&t) = TRACKED.iter().find(|t| t.as_bytes() == name.as_slice()) {
            newest.insert(t, id);
        }
    }
    assert_eq!(newest.len(), TRACKED.len(), "the daemon's gate maps by name: found {newest:?}");
    newest
        .into_iter()
        .map(|(name, id)| {
            let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
            assert!(fd >= 0, "opening gate map {name} (id {id}) read-only: errno {}", -fd);
            (name, fd)
        })
        .collect()
}

/// Entries of a hash map, by walking its keys (keys are at most 16 bytes in the tracked maps).
fn entries(fd: i32) -> u64 {
    let (mut key, mut next) = ([0u8; 64], [0u8; 64]);
    let mut count = 0;
    let mut first = true;
    loop {
        let prev = if first { std::ptr::null() } else { key.as_ptr().cast() };
        // SAFETY: key and next are larger than any tracked map's key.
        let rc = unsafe { libbpf_sys::bpf_map_get_next_key(fd, prev, next.as_mut_ptr().cast()) };
        if rc != 0 {
            return count;
        }
        count += 1;
        key = next;
        first = false;
    }
}

fn counts(maps: &BTreeMap<&'static str, i32>) -> BTreeMap<&'static str, u64> {
    maps.iter().map(|(&name, &fd)| (name, entries(fd))).collect()
}

/// The gate's dropped-events counter (per CPU, summed), read through a read-only fd by id.
fn dropped() -> u64 {
    let mut id = 0u32;
    let mut newest = None;
    // SAFETY (loop): the id pointers are valid u32s.
    while unsafe { libbpf_sys::bpf_map_get_next_id(id, &mut id) } == 0 {
        let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
        if fd < 0 {
            continue;
        }
        let mut info = libbpf_sys::bpf_map_info::default();
        let mut len = size_of::<libbpf_sys::bpf_map_info>() as u32;
        // SAFETY: info is a writable bpf_map_info of len bytes.
        let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd, &mut info, &mut len) };
        fd_result(fd);
        let end = info.name.iter().position(|&c| c == 0).unwrap_or(info.name.len());
        if rc == 0 && info.name[..end].iter().map(|&c| c as u8).eq(*b"dropped") {
            newest = Some(id);
        }
    }
    let id = newest.expect("the gate's dropped counter");
    let fd = map_fd_by_id(id, libbpf_sys::BPF_F_RDONLY);
    assert!(fd >= 0, "opening the dropped counter: errno {}", -fd);
    // SAFETY: no preconditions.
    let cpus = unsafe { libbpf_sys::libbpf_num_possible_cpus() }.max(1) as usize;
    let mut values = vec![0u64; cpus];
    let key = 0u32;
    // SAFETY: a per-CPU array lookup writes one u64 per possible CPU into `values`.
    let rc = unsafe { libbpf_sys::bpf_map_lookup_elem(fd, (&raw const key).cast(), values.as_mut_ptr().cast()) };
    fd_result(fd);
    assert_eq!(rc, 0, "reading the dropped counter");
    values.iter().sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in the daemon's status")
}

/// The next notification datagram from the daemon.
fn notification(socket: &UnixDatagram, log: &Mutex<Vec<String>>) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification from bpfgate enforce ({e}); its log:\n{}", log.lock().unwrap().join("\n")),
    }
}

/// What one decision is counted by: program (or map) name, policy generation, verdict.
type Key = (String, u64, String);

#[test]
fn gate_soak_returns_to_baseline() {
    let Some(_guard) = live("gate_soak_returns_to_baseline") else { return };
    let cli = std::path::Path::new("/usr/bin/bpfgate");
    if !cli.is_file() {
        assert!(std::env::var_os("BPFGATE_VMTEST").is_none(), "the VM harness installs {}", cli.display());
        report!("SKIPPED gate_soak_returns_to_baseline: no {}", cli.display());
        return;
    }
    let secs = std::env::var(SOAK_ENV).map_or(SOAK_DEFAULT_SECS, |v| v.parse().expect("BPFGATE_SOAK_SECS: seconds"));
    let dir = std::env::temp_dir().join(format!("bpfgate-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify = dir.join("notify");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, policy(false)).unwrap();
    // libbpf probes once per process whether the kernel takes program names, with a socket filter: the probe must
    // not run under a policy that denies socket filters, or every later load goes nameless.
    let plain: [Insn; 2] = [mov_imm(0, 0), exit()];
    let filter = libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER;
    fd_result(load_typed_fd(filter, "soak_probe", &plain).expect("a socket filter before the gate"));
    let mut child = Command::new(cli)
        .args(["enforce", "--json", "--policy"])
        .arg(&policy_path)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bpfgate enforce");
    let pid = child.id();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log_writer = log.clone();
    let stderr = child.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log_writer.lock().unwrap().push(line);
        }
    });
    // The reader that keeps up: every decision line, counted by name, generation and verdict.
    let seen: Arc<Mutex<BTreeMap<Key, u64>>> = Arc::default();
    let seen_writer = seen.clone();
    let stdout = child.stdout.take().unwrap();
    let event_reader = std::thread::spawn(move || {
        let mut other = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let op = v["op"].as_str().unwrap_or_default();
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            if !name.starts_with("soak_") {
                other.push(line);
                continue;
            }
            let key = (
                format!("{op}:{name}"),
                v["generation"].as_u64().unwrap_or(0),
                v["verdict"].as_str().unwrap_or("").to_owned(),
            );
            *seen_writer.lock().unwrap().entry(key).or_default() += 1;
        }
        other
    });

    let ready = notification(&socket, &log);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    let maps = gate_maps();
    let baseline = counts(&maps);
    let rss_start = rss_kib(pid);
    report!("soak: {secs} s; daemon pid {pid}, RSS {rss_start} KiB; gate maps at baseline: {baseline:?}");

    // A map reached through a pin every iteration (BPF_OBJ_GET: the per-thread note).
    let mut expected: BTreeMap<Key, u64> = BTreeMap::new();
    let pinned = create_map("soak_pinned");
    assert!(pinned >= 0, "creating the pinned map: errno {}", -pinned);
    let pin = c"/sys/fs/bpf/bpfgate_soak_pin";
    let _ = std::fs::remove_file("/sys/fs/bpf/bpfgate_soak_pin");
    // SAFETY: the map fd is ours; the path is NUL-terminated.
    assert_eq!(unsafe { libbpf_sys::bpf_obj_pin(pinned, pin.as_ptr()) }, 0, "pinning");
    let read_only = libbpf_sys::bpf_obj_get_opts {
        sz: size_of::<libbpf_sys::bpf_obj_get_opts>() as libbpf_sys::size_t,
        file_flags: libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };

    expected.insert(("map_create:soak_pinned".to_owned(), 0, "allow".to_owned()), 1);
    let kprobe = libbpf_sys::BPF_PROG_TYPE_KPROBE;
    let signal: [Insn; 4] = [mov_imm(1, 10), call_helper(109), mov_imm(0, 0), exit()];
    // r0 is never set: the verifier refuses it (EACCES), after the gate allowed it.
    let invalid: [Insn; 1] = [exit()];

    let mut expect = |what: &str, generation: u64, verdict: &str| {
        *expected.entry((what.to_owned(), generation, verdict.to_owned())).or_default() += 1;
    };
    let mut kept: VecDeque<i32> = VecDeque::new();
    let mut keep = |fd: i32| {
        kept.push_back(fd);
        if kept.len() > KEEP_PROGS {
            fd_result(kept.pop_front().unwrap());
        }
    };
    let mut filters = false;
    let mut generation = 1u64;
    let (mut iterations, mut reloads) = (0u64, 0u64);
    let mut rss_samples: Vec<(f64, u64)> = vec![(0.0, rss_start)];
    let mut rss_warm = None;
    let started = Instant::now();
    let mut last_sample = started;
    while started.elapsed() < Duration::from_secs(secs) {
        if iterations > 0 && iterations % RELOAD_EVERY == 0 {
            filters = !filters;
            std::fs::write(&policy_path, policy(filters)).unwrap();
            // SAFETY: the daemon is our child and not reaped.
            assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
            let reloading = notification(&socket, &log);
            let reloaded = notification(&socket, &log);
            assert!(reloading.starts_with("RELOADING=1"), "{reloading}");
            assert!(reloaded.starts_with("READY=1\nSTATUS=enforcing"), "{reloaded}");
            generation += 1;
            // Generations are the gate's install count: 1 at start, one more per reload.
            assert!(reloaded.ends_with(&format!("(generation {generation})")), "{reloaded}");
            reloads += 1;
        }
        let i = iterations;
        // Socket filter: the policy in force decides.
        match (load_typed_fd(filter, "soak_filter", &plain), filters) {
            (Ok(fd), true) => {
                keep(fd);
                expect("load:soak_filter", generation, "allow");
            }
            (Err(libc::EPERM), false) => expect("load:soak_filter", generation, "deny"),
            (r, f) => panic!("iteration {i}: socket filter with filters={f}: {r:?}"),
        }
        // A kprobe: always allowed; kept, then opened by id.
        let kp = load_typed_fd(kprobe, "soak_kprobe", &plain).unwrap_or_else(|e| panic!("iteration {i}: kprobe: {e}"));
        expect("load:soak_kprobe", generation, "allow");
        // SAFETY: the id of a program this test holds.
        let by_id = fd_result(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(obj_id(kp)) });
        assert_eq!(by_id, 0, "iteration {i}: the loader's own program by id");
        keep(kp);
        // send_signal: denied by every policy of the run.
        assert_eq!(load_typed_fd(kprobe, "soak_signal", &signal).map(fd_result), Err(libc::EPERM), "iteration {i}");
        expect("load:soak_signal", generation, "deny");
        // Refused by the verifier after the gate allowed it: its pending record goes at lsm/bpf_prog_free.
        assert_eq!(load_typed_fd(kprobe, "soak_invalid", &invalid).map(fd_result), Err(libc::EACCES), "iteration {i}");
        expect("load:soak_invalid", generation, "allow");
        // A map created, opened writable by id (its owner), freed.
        let map = create_map("soak_map");
        assert!(map >= 0, "iteration {i}: creating a map: errno {}", -map);
        expect("map_create:soak_map", 0, "allow");
        assert_eq!(fd_result(map_fd_by_id(obj_id(map), 0)), 0, "iteration {i}: own map by id");
        fd_result(map);
        // Through the pin, read-only.
        // SAFETY: a NUL-terminated path and valid options.
        let got = fd_result(unsafe { libbpf_sys::bpf_obj_get_opts(pin.as_ptr(), &read_only) });
        assert_eq!(got, 0, "iteration {i}: the pinned map read-only");
        iterations += 1;
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let t = started.elapsed().as_secs_f64();
            let rss = rss_kib(pid);
            rss_samples.push((t, rss));
            if rss_warm.is_none() && t >= secs as f64 / 10.0 {
                rss_warm = Some((t, rss));
            }
        }
    }
    let took = started.elapsed();
    let rss_end = rss_kib(pid);
    while let Some(fd) = kept.pop_front() {
        fd_result(fd);
    }
    let _ = std::fs::remove_file("/sys/fs/bpf/bpfgate_soak_pin");
    fd_result(pinned);
    // Maps and programs are freed from deferred work (RCU, workqueues): wait, bounded, for the baseline.
    let closed = Instant::now();
    let mut now = counts(&maps);
    while now != baseline && closed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        now = counts(&maps);
    }
    let settled = closed.elapsed();
    let drops = dropped();
    // SAFETY: the daemon is our child and not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let other = event_reader.join().unwrap();
    log_reader.join().unwrap();
    for fd in maps.values() {
        fd_result(*fd);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let log = log.lock().unwrap().join("\n");
    let seen = seen.lock().unwrap().clone();

    let (rss_warm_t, rss_warm) = rss_warm.unwrap_or((0.0, rss_start));
    let rss_max = rss_samples.iter().map(|s| s.1).max().unwrap_or(rss_end);
    let decisions: u64 = seen.values().sum();
    report!(
        "soak: {iterations} iterations in {:.1} s ({:.1}/s), {reloads} reloads (generations 1..={generation}), {decisions} \
         decisions read, {drops} dropped, {} other events",
        took.as_secs_f64(),
        iterations as f64 / took.as_secs_f64(),
        other.len()
    );
    report!(
        "soak: daemon RSS {rss_start} KiB at start, {rss_warm} KiB after warm-up ({rss_warm_t:.0} s), {rss_end} KiB at the \
         end, max {rss_max} KiB; {} samples",
        rss_samples.len()
    );
    report!(
        "soak: gate maps back to {now:?} {:.0} ms after the last close (baseline {baseline:?})",
        settled.as_secs_f64() * 1e3
    );
    for (k, n) in &expected {
        report!("soak: expected {k:?} x {n}, read {}", seen.get(k).copied().unwrap_or(0));
    }
    assert!(status.success(), "the daemon's exit: {status}\n{log}");
    assert!(other.is_empty(), "decisions on objects the soak did not make: {other:?}");
    assert_eq!(now, baseline, "gate maps after the soak, against their baseline");
    assert_eq!(drops, 0, "events dropped while the reader kept up");
    assert_eq!(seen, expected, "decisions read (name, generation, verdict) against the policy in force");
    assert!(iterations >= RELOAD_EVERY, "too short a run to reload: {iterations} iterations");
    assert!(
        rss_end <= rss_warm + RSS_SLACK_KIB,
        "the daemon's RSS grew from {rss_warm} KiB (after warm-up) to {rss_end} KiB: {rss_samples:?}"
    );
}
