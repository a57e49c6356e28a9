//! A load's final decision is made by the first fd made for the program (`lsm/bpf_prog`), and that need not be
//! the loader's own: once the kernel has given the program its id, another process can open it by id before the
//! loader's `bpf_prog_new_fd`. The decision must still be the loader's, by the subject recorded at the load, its
//! cgroup included: not by the cgroup of whichever task opens the program first.
//!
//! The opener here is what a watcher of BPF loads looks like: a SCHED_FIFO process in a cgroup whose rule allows
//! everything, woken by the kernel's perf event for each program load (`PERF_RECORD_BPF_EVENT`, emitted between
//! the id and the loader's fd). On the VM's one CPU its wake-up preempts the loader right there (the harness
//! boots with preempt=full), so it opens the new id before the loader makes its fd. The loader, in a cgroup whose
//! rule refuses map writes, loads a program that writes a map: allowed at `lsm/bpf_prog_load` (the map rules wait
//! for the maps the verifier binds), refused at `lsm/bpf_prog`, by the loader's rule, whoever asks first.

use std::io::{BufRead as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpfgate::gate_abi::reason_bits;
use bpfgate_gate::event::{scan_flags, RawEvent, OP_PROG_MAPS, VERDICT_DENY};
use libbpf_rs::libbpf_sys;

use super::gate::{fd_result, named, preempt_full, run_child, Live, TestCgroup};
use super::live;

/// Environment variable of `first_fd_child_opener`: the cgroup it moves into.
const OPENER_ENV: &str = "BPFGATE_FIRST_FD_OPENER_CGROUP";

/// Loads to try before giving up on the opener deciding one (it wins the race for nearly every load).
const ATTEMPTS: usize = 20;
/// Loads the opener must have decided.
const DECIDED_BY_OPENER: usize = 3;

#[test]
fn first_fd_decides_by_the_loaders_cgroup() {
    let Some(_guard) = live("first_fd_decides_by_the_loaders_cgroup") else { return };
    if !preempt_full("first_fd_decides_by_the_loaders_cgroup") {
        return;
    }
    let (opener_cg, loader_cg) = (TestCgroup::new("bpfgate-opener"), TestCgroup::new("bpfgate-loader"));
    let mut g = Live::new();
    g.install(&format!(
        "version: 1\ndefault: deny\nrules:\n  - name: opener\n    subject:\n      cgroup: {}\n  - name: loader\n    \
         subject:\n      cgroup: {}\n    maps:\n      write: none\n",
        opener_cg.policy_path, loader_cg.policy_path
    ));
    g.take();
    let mut opener = Opener::start(&opener_cg.path);
    let (mut loads, mut events) = (Vec::new(), Vec::new());
    while loads.len() < ATTEMPTS {
        // `write_own`: creates a map and loads a socket filter (bpfgate_wown) that updates it.
        let result = run_child(Some(&loader_cg.path), &["write_own".into()]);
        loads.push(result.get("write_own").copied());
        events.extend(g.take());
        if finals(&events).iter().filter(|e| at_other_open(e)).count() >= DECIDED_BY_OPENER {
            break;
        }
    }
    let opens = opener.finish();
    events.extend(g.take());
    let finals = finals(&events);
    for e in &finals {
        report!("first fd: {}", g.describe(e));
    }
    let by_opener = finals.iter().filter(|e| at_other_open(e)).count();
    report!(
        "first fd: {} loads {loads:?}; {} final decisions, {by_opener} made by the opener's open; opens {opens:?}",
        loads.len(),
        finals.len()
    );
    assert!(loads.iter().all(|&r| r == Some(libc::EPERM)), "every load must be refused: {loads:?}");
    assert_eq!(finals.len(), loads.len(), "one final decision per load");
    for e in &finals {
        assert_eq!((e.verdict, e.rule), (VERDICT_DENY, 1), "decided by the loader's rule: {}", g.describe(e));
        assert_ne!(e.reasons & reason_bits::MAP, 0, "refused for its map write: {}", g.describe(e));
        // The event names the loader (a child of this test), whoever's call decided.
        assert_ne!(e.tgid, opener.pid, "the event names the loader, not the opener: {}", g.describe(e));
        assert!(!e.comm.starts_with(b"first_fd"), "the opener's comm: {}", g.describe(e));
    }
    assert!(by_opener >= DECIDED_BY_OPENER, "the opener made the first fd of {by_opener} of {} loads", loads.len());
    // The opener never got an fd to a refused program (ENOENT: freed before its open). Its other opens are of
    // the loader's feature probes, which its rule lets it have.
    let refused: Vec<u32> = finals.iter().map(|e| e.object_id).collect();
    let leaked: Vec<_> = opens.iter().filter(|&&(id, r)| refused.contains(&id) && r == 0).collect();
    assert!(leaked.is_empty(), "the opener got an fd to refused programs: {leaked:?}");
}

/// Whether the decision ran in another process's open by id (the opener's), before the loader's own fd.
fn at_other_open(e: &RawEvent) -> bool {
    e.scan_flags & scan_flags::OTHER_TASK != 0
}

/// The final decisions on the test's loads (`load_maps` events): a map rule refused them.
fn finals(events: &[RawEvent]) -> Vec<RawEvent> {
    named(events, "bpfgate_wown").into_iter().filter(|e| e.op == OP_PROG_MAPS).copied().collect()
}

/// A running `first_fd_child_opener`, killed when this drops.
struct Opener {
    child: Option<std::process::Child>,
    pid: u32,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Opener {
    /// Starts the opener in `cgroup` and waits until it watches program loads.
    fn start(cgroup: &std::path::Path) -> Opener {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "first_fd::first_fd_child_opener", "--test-threads=1", "--nocapture"])
            .env(OPENER_ENV, cgroup)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the opener");
        let lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // Made first, so that a failure below kills the child.
        let mut opener = Opener { pid: child.id(), child: Some(child), lines };
        loop {
            let line = opener.lines.next().expect("the opener exited before it was ready").expect("reading the opener");
            // libtest prints "test NAME ... " before the first line.
            if line.ends_with("ready") {
                return opener;
            }
        }
    }

    /// Stops the opener; what each of its opens gave: (program id, errno or 0).
    fn finish(&mut self) -> Vec<(u32, i32)> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut opens = Vec::new();
        for line in self.lines.by_ref().map_while(Result::ok) {
            let Some((id, errno)) = line.rsplit_once("open ").and_then(|(_, r)| r.split_once('=')) else { continue };
            if let (Ok(id), Ok(errno)) = (id.parse(), errno.trim().parse()) {
                opens.push((id, errno));
            }
        }
        opens
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Not a test on its own: the opener of `first_fd_decides_by_the_loaders_cgroup`, run as a child process. Moves
/// into its cgroup, becomes SCHED_FIFO, prints `ready` once it watches program loads, then opens each new program
/// by id as soon as the kernel announces it, printing `open ID=ERRNO` (0: it got an fd); killed by the test.
#[test]
fn first_fd_child_opener() {
    let Ok(cgroup) = std::env::var(OPENER_ENV) else { return };
    std::fs::write(format!("{cgroup}/cgroup.procs"), "0").expect("joining the opener's cgroup");
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is this thread; param is a valid sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    assert_eq!(rc, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
    let mut ring = BpfEvents::open();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        for id in ring.wait_for_loads(Duration::from_millis(200)) {
            // SAFETY: a plain id lookup; fd_result closes the fd.
            let result = fd_result(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) });
            let _ = writeln!(out, "open {id}={result}");
            let _ = out.flush();
        }
    }
    std::process::exit(0);
}

/// `struct perf_event_attr` up to `bp_type`, and the rest of its 112 bytes (PERF_ATTR_SIZE_VER5) zeroed.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    rest: [u64; 7],
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
/// `perf_event_attr` flag bits: wake up by bytes written (`wakeup_watermark`), and PERF_RECORD_BPF_EVENT records.
const ATTR_WATERMARK: u64 = 1 << 14;
const ATTR_BPF_EVENT: u64 = 1 << 30;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_RECORD_BPF_EVENT: u32 = 18;
const PERF_BPF_EVENT_PROG_LOAD: u16 = 1;
const PAGE: usize = 4096;
/// Data pages of the ring buffer (a power of two).
const DATA_PAGES: usize = 8;
/// `struct perf_event_mmap_page`: where `data_head` and `data_tail` are.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

/// The kernel's BPF program load announcements on CPU 0 (the VM's only one), from a perf ring buffer.
struct BpfEvents {
    fd: OwnedFd,
    ring: *mut u8,
    tail: u64,
}

impl BpfEvents {
    fn open() -> BpfEvents {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_DUMMY,
            flags: ATTR_WATERMARK | ATTR_BPF_EVENT,
            // Every record wakes the reader.
            wakeup_watermark: 1,
            ..Default::default()
        };
        // SAFETY: attr is a valid perf_event_attr of the size it states; pid -1 with cpu 0: every task on CPU 0.
        let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &raw const attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC) };
        assert!(fd >= 0, "perf_event_open: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd this process owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: maps the event's header page and ring, shared with the kernel, for the life of this struct.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (1 + DATA_PAGES) * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ring, libc::MAP_FAILED, "mmap of the perf ring: {}", std::io::Error::last_os_error());
        BpfEvents { fd, ring: ring.cast(), tail: 0 }
    }

    /// The ids of the programs loaded since the last call, waiting up to `timeout` for one.
    fn wait_for_loads(&mut self, timeout: Duration) -> Vec<u32> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        // SAFETY: the header page is mapped; data_head is a u64 the kernel writes, read with acquire ordering.
        let head = unsafe { (*self.ring.add(DATA_HEAD).cast::<std::sync::atomic::AtomicU64>()).load(ACQUIRE) };
        let mut ids = Vec::new();
        while self.tail + 8 <= head {
            let header = self.read(self.tail, 8);
            let kind = u32::from_ne_bytes(header[..4].try_into().unwrap());
            let size = u64::from(u16::from_ne_bytes(header[6..8].try_into().unwrap()));
            if size < 8 {
                break;
            }
            if kind == PERF_RECORD_BPF_EVENT && size >= 16 {
                let body = self.read(self.tail + 8, 8);
                if u16::from_ne_bytes(body[..2].try_into().unwrap()) == PERF_BPF_EVENT_PROG_LOAD {
                    ids.push(u32::from_ne_bytes(body[4..8].try_into().unwrap()));
                }
            }
            self.tail += size;
        }
        // SAFETY: as above; data_tail tells the kernel what was read, stored with release ordering.
        unsafe { (*self.ring.add(DATA_TAIL).cast::<std::sync::atomic::AtomicU64>()).store(self.tail, RELEASE) };
        ids
    }

    /// `len` bytes of the ring at position `pos`, wrapping around its end.
    fn read(&self, pos: u64, len: usize) -> Vec<u8> {
        let size = DATA_PAGES * PAGE;
        (0..len)
            .map(|i| {
                let at = (pos as usize + i) % size;
                // SAFETY: `at` is inside the data pages, which follow the header page.
                unsafe { *self.ring.add(PAGE + at) }
            })
            .collect()
    }
}

impl Drop for BpfEvents {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open, unmapped once.
        unsafe { libc::munmap(self.ring.cast(), (1 + DATA_PAGES) * PAGE) };
    }
}

const ACQUIRE: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Acquire;
const RELEASE: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Release;
