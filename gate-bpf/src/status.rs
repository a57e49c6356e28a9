//! What `bpfgate status` and the metrics endpoint report, and where a gate keeps it.
//!
//! The gate's decision counters live in its per-CPU `decision_counts` map (indexed by
//! [`bpfgate::gate_abi::counter_index`]), its lost events in `dropped`. What only the daemon knows (the policy's
//! path and digest, when it was installed, the rule names, the executables that did not resolve, the hooks and
//! their link ids, and the counts of generations no longer in force) is a JSON [`Record`] the daemon writes into
//! a one-entry array map of its own, named [`STATUS_MAP`], at every change. That map lives as long as the gate:
//! it is protected like the gate's other maps, closed with the daemon when the gate is fd-bound, and pinned
//! beside the links with `--persist`. A reader finds a gate by listing the kernel's maps for that name and opens
//! everything read-only by id, which the gate allows to root: the same code reads an fd-bound gate whose daemon
//! runs and a persisted gate whose daemon is gone.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use bpfgate::gate_abi::{
    counter_index, COUNTERS, COUNT_GATE_OBJECT, COUNT_LOADS, COUNT_OPENS, MAX_RULES, VERDICT_ALLOW, VERDICT_AUDIT,
    VERDICT_DENY,
};
use libbpf_rs::libbpf_sys;
use serde::{Deserialize, Serialize};

/// The name of the map that holds a gate's [`Record`] (BPF object names have 15 characters at most).
pub const STATUS_MAP: &str = "bpfgate_status";
/// The value size of [`STATUS_MAP`]'s one entry: a header, the JSON record and a trailer.
pub const RECORD_SIZE: usize = 64 * 1024;
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"BGST");
/// Magic, length, sequence number before the JSON; the sequence number again after it.
const HEADER: usize = 16;
/// The version of [`Status`]'s JSON form (docs/status.md).
pub const STATUS_SCHEMA_VERSION: u32 = 1;
/// How the policy default is named where rules are named.
pub const DEFAULT_RULE: &str = "(default)";

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{what}: {error}")]
    Sys { what: String, error: std::io::Error },
    #[error("the gate's status record does not fit in {RECORD_SIZE} bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("the gate's status record is not readable: {0}")]
    BadRecord(String),
}

fn sys(what: impl Into<String>, rc: i32) -> StatusError {
    let errno = if rc < 0 { -rc } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) };
    StatusError::Sys { what: what.into(), error: std::io::Error::from_raw_os_error(errno) }
}

/// What the daemon records about its gate (see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The daemon's pid and its start time (clock ticks since boot, `/proc/PID/stat` field 22), which tell
    /// it from a later process that got the same pid.
    pub daemon_pid: u32,
    pub daemon_start: u64,
    /// Where the gate is pinned (`--persist`); None while it is fd-bound.
    pub pin_dir: Option<String>,
    /// The hooks attached and their links.
    pub hooks: Vec<HookLink>,
    pub counters_map_id: u32,
    pub dropped_map_id: u32,
    /// The policy in force; None before the first install.
    pub policy: Option<PolicyRecord>,
    /// Decisions of the generations no longer in force, by rule name (for totals since the daemon started).
    pub earlier: Vec<RuleCounts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookLink {
    pub hook: String,
    pub link_id: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The file it was read from; None when installed from memory (tests).
    pub path: Option<String>,
    /// SHA-256 of the file's bytes, lowercase hex (what `sha256sum` prints).
    pub sha256: Option<String>,
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub loaded_at_unix: u64,
    /// The policy is in audit mode (its `mode: audit`, or `enforce --audit`).
    pub audit: bool,
    /// Executables of the policy that did not resolve on this host: their rules cannot match.
    pub unresolved: Vec<String>,
    /// Rule names by rule index.
    pub rules: Vec<String>,
}

/// Decisions by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    pub allowed: u64,
    pub denied: u64,
    pub audited: u64,
}

impl Verdicts {
    fn add(&mut self, o: &Verdicts) {
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.audited += o.audited;
    }

    /// `(action label, count)`: allowed, denied, audited.
    pub fn labelled(&self) -> [(&'static str, u64); 3] {
        [("allowed", self.allowed), ("denied", self.denied), ("audited", self.audited)]
    }

    fn is_zero(&self) -> bool {
        self.allowed == 0 && self.denied == 0 && self.audited == 0
    }
}

/// One rule's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounts {
    /// The rule's name, or `(default)` for the policy default.
    pub rule: String,
    /// The rule's index in the policy in force; None for the default (and in totals).
    pub index: Option<u32>,
    /// Program loads, each counted once at its final decision.
    pub loads: Verdicts,
    /// Fds to another subject's maps or programs that the rule decided.
    pub opens: Verdicts,
}

/// Encodes `record` as [`STATUS_MAP`]'s value. `seq` tells a reader whose copy raced a write (header and
/// trailer differ).
pub fn encode(record: &Record, seq: u64) -> Result<Vec<u8>, StatusError> {
    let json = serde_json::to_vec(record).map_err(|e| StatusError::BadRecord(e.to_string()))?;
    if HEADER + json.len() + 8 > RECORD_SIZE {
        return Err(StatusError::TooLarge(json.len()));
    }
    let mut v = vec![0u8; RECORD_SIZE];
    v[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    v[4..8].copy_from_slice(&(json.len() as u32).to_le_bytes());
    v[8..16].copy_from_slice(&seq.to_le_bytes());
    v[HEADER..HEADER + json.len()].copy_from_slice(&json);
    v[HEADER + json.len()..HEADER + json.len() + 8].copy_from_slice(&seq.to_le_bytes());
    Ok(v)
}

/// Decodes [`encode`]'s bytes; an error for anything else, a copy torn by a concurrent write included.
pub fn decode(bytes: &[u8]) -> Result<Record, StatusError> {
    let bad = |m: &str| StatusError::BadRecord(m.to_owned());
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    if u32_at(0) != Some(RECORD_MAGIC) {
        return Err(bad("no magic"));
    }
    let len = u32_at(4).ok_or_else(|| bad("short"))? as usize;
    let json = bytes.get(HEADER..HEADER + len).ok_or_else(|| bad("length past the end"))?;
    if u64_at(8) != u64_at(HEADER + len) {
        return Err(bad("written while read"));
    }
    serde_json::from_slice(json).map_err(|e| StatusError::BadRecord(e.to_string()))
}

/// The decision counters, summed over CPUs: [`counter_index`] order.
pub fn read_counters(fd: &OwnedFd) -> Result<Vec<u64>, StatusError> {
    let cpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| StatusError::Sys { what: "counting possible CPUs".into(), error: std::io::Error::other(e) })?;
    let mut per_cpu = vec![0u64; cpus];
    let mut sums = vec![0u64; COUNTERS];
    for (key, sum) in sums.iter_mut().enumerate() {
        let key = key as u32;
        // SAFETY: a per-CPU array lookup writes one 8-byte value per possible CPU into `per_cpu`.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_elem(fd.as_raw_fd(), (&raw const key).cast(), per_cpu.as_mut_ptr().cast())
        };
        if rc != 0 {
            return Err(sys("reading the decision counters", rc));
        }
        *sum = per_cpu.iter().sum();
    }
    Ok(sums)
}

/// Zeroes one slot's decision counters (the daemon, before the slot is reused).
pub(crate) fn zero_slot(fd: &OwnedFd, slot: usize) -> Result<(), StatusError> {
    let cpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| StatusError::Sys { what: "counting possible CPUs".into(), error: std::io::Error::other(e) })?;
    let zeros = vec![0u64; cpus];
    for rule in 0..=MAX_RULES {
        for kind in [COUNT_LOADS, COUNT_OPENS] {
            for verdict in [VERDICT_ALLOW, VERDICT_DENY, VERDICT_AUDIT] {
                let key = counter_index(slot, rule, kind, usize::from(verdict)) as u32;
                // SAFETY: a per-CPU array update reads one 8-byte value per possible CPU from `zeros`.
                let rc = unsafe {
                    libbpf_sys::bpf_map_update_elem(
                        fd.as_raw_fd(),
                        (&raw const key).cast(),
                        zeros.as_ptr().cast(),
                        u64::from(libbpf_sys::BPF_ANY),
                    )
                };
                if rc != 0 {
                    return Err(sys("zeroing decision counters", rc));
                }
            }
        }
    }
    Ok(())
}

fn verdicts(counts: &[u64], slot: usize, rule: usize, kind: usize) -> Verdicts {
    let at = |v: u8| counts.get(counter_index(slot, rule, kind, usize::from(v))).copied().unwrap_or(0);
    Verdicts { allowed: at(VERDICT_ALLOW), denied: at(VERDICT_DENY), audited: at(VERDICT_AUDIT) }
}

/// The counts of the generation in `slot`, per rule of `rules` and the default, in rule order.
pub fn slot_counts(counts: &[u64], slot: usize, rules: &[String]) -> Vec<RuleCounts> {
    let mut out: Vec<RuleCounts> = rules
        .iter()
        .enumerate()
        .take(MAX_RULES)
        .map(|(i, name)| RuleCounts {
            rule: name.clone(),
            index: Some(i as u32),
            loads: verdicts(counts, slot, i, COUNT_LOADS),
            opens: verdicts(counts, slot, i, COUNT_OPENS),
        })
        .collect();
    out.push(RuleCounts {
        rule: DEFAULT_RULE.into(),
        index: None,
        loads: verdicts(counts, slot, MAX_RULES, COUNT_LOADS),
        opens: verdicts(counts, slot, MAX_RULES, COUNT_OPENS),
    });
    out
}

/// Adds `more` to `totals` by rule name (indexes dropped: totals span generations).
pub fn add_by_name(totals: &mut Vec<RuleCounts>, more: &[RuleCounts]) {
    let mut by_name: BTreeMap<String, RuleCounts> = totals.drain(..).map(|c| (c.rule.clone(), c)).collect();
    for c in more.iter().filter(|c| !c.loads.is_zero() || !c.opens.is_zero()) {
        let t =
            by_name.entry(c.rule.clone()).or_insert_with(|| RuleCounts { rule: c.rule.clone(), ..Default::default() });
        t.loads.add(&c.loads);
        t.opens.add(&c.opens);
    }
    totals.extend(by_name.into_values());
}

/// The name totals of rules no longer in force are merged under when the record would not fit.
pub const RETIRED_RULES: &str = "(rules no longer in force)";

/// Merges the totals of rules not named in `in_force` (nor the default) into one [`RETIRED_RULES`] entry.
pub fn merge_retired(totals: &mut Vec<RuleCounts>, in_force: &[String]) {
    let mut retired = RuleCounts { rule: RETIRED_RULES.into(), ..Default::default() };
    totals.retain(|t| {
        let keep = t.rule == DEFAULT_RULE || in_force.contains(&t.rule);
        if !keep {
            retired.loads.add(&t.loads);
            retired.opens.add(&t.opens);
        }
        keep
    });
    if !retired.loads.is_zero() || !retired.opens.is_zero() {
        totals.push(retired);
    }
}

/// How the gate stays attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Its links are held by the daemon's fds: it goes away with the daemon.
    FdBound,
    /// Its links are pinned in bpffs: it stays until `bpfgate enforce --stop`.
    Persisted,
}

/// `bpfgate status --json`: one object, documented in docs/status.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub schema_version: u32,
    /// Always true here; `bpfgate status --json` prints `{"schema_version": 1, "found": false, "attached":
    /// false}` when no gate is loaded.
    pub found: bool,
    /// Every hook the gate attached still has its link.
    pub attached: bool,
    pub mode: Mode,
    pub daemon: Daemon,
    pub pin_dir: Option<String>,
    pub hooks: Vec<HookStatus>,
    pub policy: Option<PolicyStatus>,
    /// The generation in force: per rule (in rule order) and the default, since it was installed.
    pub rules: Vec<RuleCounts>,
    /// Since the daemon started, over every generation, by rule name.
    pub totals: Vec<RuleCounts>,
    /// Fds to the gate's own maps, programs and links refused to other processes (self-protection).
    pub gate_objects_refused: u64,
    /// Events lost because the ring buffer was full (the decisions were still made and counted).
    pub dropped_events: u64,
    /// Other gates found (normally 0; this one is the attached one with the newest status map).
    pub other_gates: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Daemon {
    pub pid: u32,
    /// The process with that pid is still the one that loaded the gate.
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    pub hook: String,
    pub link_id: u32,
    pub attached: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    pub path: Option<String>,
    pub sha256: Option<String>,
    pub generation: u64,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// UTC, RFC 3339 (`2026-12-05T20:41:07Z`).
    pub loaded_at: String,
    pub loaded_at_unix: u64,
    pub unresolved: Vec<String>,
}

/// A gate's maps, open read-only: what a [`Status`] is read from.
#[derive(Debug)]
pub struct GateReader {
    status: OwnedFd,
    counters: OwnedFd,
    dropped: OwnedFd,
    /// Held by the daemon while it moves a retired generation's counts into the record, so an in-process reader
    /// never sees them twice or not at all.
    lock: Option<Arc<Mutex<()>>>,
}

impl GateReader {
    pub(crate) fn new(status: OwnedFd, counters: OwnedFd, dropped: OwnedFd, lock: Option<Arc<Mutex<()>>>) -> Self {
        GateReader { status, counters, dropped, lock }
    }

    /// The gate's record as last written.
    pub fn record(&self) -> Result<Record, StatusError> {
        // A copy that raced a write is torn (its sequence numbers differ); writes are rare and short, so the
        // next copy is whole.
        let mut last = None;
        for _ in 0..8 {
            match decode(&lookup(&self.status, RECORD_SIZE)?) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StatusError::BadRecord("unreadable".into())))
    }

    /// The gate's status now.
    pub fn status(&self) -> Result<Status, StatusError> {
        let _guard = self.lock.as_ref().map(|l| l.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let record = self.record()?;
        let counts = read_counters(&self.counters)?;
        let dropped = percpu_sum(&self.dropped, 0)?;
        Ok(build_status(record, &counts, dropped))
    }
}

fn build_status(record: Record, counts: &[u64], dropped: u64) -> Status {
    let hooks: Vec<HookStatus> = record
        .hooks
        .iter()
        .map(|h| HookStatus { hook: h.hook.clone(), link_id: h.link_id, attached: link_exists(h.link_id) })
        .collect();
    let attached = !hooks.is_empty() && hooks.iter().all(|h| h.attached);
    let rules = match &record.policy {
        Some(p) => slot_counts(counts, (p.generation & 1) as usize, &p.rules),
        None => Vec::new(),
    };
    let mut totals = record.earlier.clone();
    add_by_name(&mut totals, &rules);
    let persisted = record.pin_dir.as_deref().is_some_and(|d| std::path::Path::new(d).is_dir());
    Status {
        schema_version: STATUS_SCHEMA_VERSION,
        found: true,
        attached,
        mode: if persisted { Mode::Persisted } else { Mode::FdBound },
        daemon: Daemon {
            pid: record.daemon_pid,
            running: start_time(record.daemon_pid).is_some_and(|t| t == record.daemon_start),
        },
        pin_dir: record.pin_dir.clone(),
        hooks,
        policy: record.policy.map(|p| PolicyStatus {
            path: p.path,
            sha256: p.sha256,
            generation: p.generation,
            mode: if p.audit { "audit" } else { "enforce" },
            loaded_at: rfc3339(p.loaded_at_unix),
            loaded_at_unix: p.loaded_at_unix,
            unresolved: p.unresolved,
        }),
        rules,
        totals,
        gate_objects_refused: counts.get(COUNT_GATE_OBJECT).copied().unwrap_or(0),
        dropped_events: dropped,
        other_gates: 0,
    }
}

/// The status of the gate on this host: the attached one whose status map is newest (a gate just stopped may
/// linger a moment while the kernel frees it). None when no gate is loaded. Needs root (CAP_SYS_ADMIN opens
/// maps by id).
pub fn find() -> Result<Option<Status>, StatusError> {
    let mut found = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid out pointer.
        let rc = unsafe { libbpf_sys::bpf_map_get_next_id(id, &mut next) };
        if rc != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if rc == -libc::ENOENT || errno == libc::ENOENT {
                break;
            }
            return Err(sys("listing BPF maps", rc));
        }
        id = next;
        // A map freed meanwhile is no gate.
        let Ok(fd) = map_by_id(id) else { continue };
        if map_name(&fd).as_deref() == Some(STATUS_MAP) {
            found.push((id, fd));
        }
    }
    let mut statuses = Vec::new();
    for (id, fd) in found.into_iter().rev() {
        // A gate being torn down: its other maps may be gone already.
        let Ok(reader) = reader_for(fd) else { continue };
        statuses.push((id, reader.status()?));
    }
    let count = statuses.len() as u32;
    // Newest first: the first attached one, else the newest.
    let pick = statuses.iter().position(|(_, s)| s.attached).unwrap_or(0);
    Ok((!statuses.is_empty()).then(|| {
        let (_, mut s) = statuses.swap_remove(pick);
        s.other_gates = count - 1;
        s
    }))
}

fn reader_for(status: OwnedFd) -> Result<GateReader, StatusError> {
    let record = decode(&lookup(&status, RECORD_SIZE)?)?;
    let counters = map_by_id(record.counters_map_id)?;
    let dropped = map_by_id(record.dropped_map_id)?;
    Ok(GateReader::new(status, counters, dropped, None))
}

/// A read-only fd to map `id` (the gate refuses writable fds to its maps to anyone but its daemon).
fn map_by_id(id: u32) -> Result<OwnedFd, StatusError> {
    let opts = libbpf_sys::bpf_get_fd_by_id_opts {
        sz: size_of::<libbpf_sys::bpf_get_fd_by_id_opts>() as libbpf_sys::size_t,
        open_flags: libbpf_sys::BPF_F_RDONLY,
        ..Default::default()
    };
    // SAFETY: `opts` is valid for the call.
    let fd = unsafe { libbpf_sys::bpf_map_get_fd_by_id_opts(id, &opts) };
    if fd < 0 {
        return Err(sys(format!("opening map {id} read-only"), fd));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_name(fd: &OwnedFd) -> Option<String> {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = size_of_val(&info) as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`.
    let rc = unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    if rc != 0 || info.value_size as usize != RECORD_SIZE {
        return None;
    }
    let name: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8(name).ok()
}

fn lookup(fd: &OwnedFd, size: usize) -> Result<Vec<u8>, StatusError> {
    let mut value = vec![0u8; size];
    let key = 0u32;
    // SAFETY: an array lookup writes value_size (`size`) bytes into `value`.
    let rc =
        unsafe { libbpf_sys::bpf_map_lookup_elem(fd.as_raw_fd(), (&raw const key).cast(), value.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(sys("reading the gate's status record", rc));
    }
    Ok(value)
}

fn percpu_sum(fd: &OwnedFd, key: u32) -> Result<u64, StatusError> {
    let cpus = libbpf_rs::num_possible_cpus()
        .map_err(|e| StatusError::Sys { what: "counting possible CPUs".into(), error: std::io::Error::other(e) })?;
    let mut per_cpu = vec![0u64; cpus];
    // SAFETY: a per-CPU array lookup writes one 8-byte value per possible CPU into `per_cpu`.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_elem(fd.as_raw_fd(), (&raw const key).cast(), per_cpu.as_mut_ptr().cast())
    };
    if rc != 0 {
        return Err(sys("reading the dropped-events counter", rc));
    }
    Ok(per_cpu.iter().sum())
}

/// Whether a link with this id exists: ids are listed in order, so the next after `id - 1` is `id`.
fn link_exists(id: u32) -> bool {
    let mut next = 0;
    // SAFETY: `next` is a valid out pointer.
    let rc = unsafe { libbpf_sys::bpf_link_get_next_id(id.wrapping_sub(1), &mut next) };
    id != 0 && rc == 0 && next == id
}

/// A process's start time (`/proc/PID/stat` field 22, clock ticks since boot); None when it does not exist.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Seconds since the epoch as UTC RFC 3339 (days to civil date: Howard Hinnant's algorithm).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_copies_are_refused() {
        let r = Record {
            daemon_pid: 7,
            policy: Some(PolicyRecord { generation: 3, rules: vec!["a".into()], ..Default::default() }),
            ..Default::default()
        };
        let bytes = encode(&r, 5).unwrap();
        assert_eq!(bytes.len(), RECORD_SIZE);
        assert_eq!(decode(&bytes).unwrap(), r);
        let mut torn = bytes.clone();
        let newer = encode(&r, 6).unwrap();
        torn[..HEADER].copy_from_slice(&newer[..HEADER]);
        assert!(matches!(decode(&torn), Err(StatusError::BadRecord(_))));
        assert!(decode(&[0u8; 32]).is_err());
        let huge = Record { earlier: vec![RuleCounts { rule: "x".repeat(RECORD_SIZE), ..Default::default() }], ..r };
        assert!(matches!(encode(&huge, 1), Err(StatusError::TooLarge(_))));
    }

    #[test]
    fn counts_are_read_per_slot_and_totalled_by_name() {
        let mut counts = vec![0u64; COUNTERS];
        counts[counter_index(1, 0, COUNT_LOADS, usize::from(VERDICT_DENY))] = 2;
        counts[counter_index(1, MAX_RULES, COUNT_LOADS, usize::from(VERDICT_ALLOW))] = 5;
        counts[counter_index(0, 0, COUNT_LOADS, usize::from(VERDICT_DENY))] = 100; // another generation's
        counts[counter_index(1, 1, COUNT_OPENS, usize::from(VERDICT_AUDIT))] = 1;
        let rules = vec!["first".to_owned(), "second".to_owned()];
        let c = slot_counts(&counts, 1, &rules);
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].rule.as_str(), c[0].index, c[0].loads.denied), ("first", Some(0), 2));
        assert_eq!(c[1].opens.audited, 1);
        assert_eq!((c[2].rule.as_str(), c[2].index, c[2].loads.allowed), (DEFAULT_RULE, None, 5));
        let mut totals = vec![RuleCounts {
            rule: "first".into(),
            loads: Verdicts { denied: 10, ..Default::default() },
            ..Default::default()
        }];
        add_by_name(&mut totals, &c);
        let first = totals.iter().find(|t| t.rule == "first").unwrap();
        assert_eq!(first.loads.denied, 12);
        assert!(totals.iter().any(|t| t.rule == DEFAULT_RULE && t.loads.allowed == 5));
        assert_eq!(counter_index(1, MAX_RULES, COUNT_OPENS, 2) + 1, COUNT_GATE_OBJECT);
    }

    #[test]
    fn totals_of_rules_gone_merge_into_one() {
        let count = |rule: &str, denied| RuleCounts {
            rule: rule.into(),
            loads: Verdicts { denied, ..Default::default() },
            ..Default::default()
        };
        let mut totals = vec![count("old-a", 1), count("kept", 2), count(DEFAULT_RULE, 3), count("old-b", 4)];
        merge_retired(&mut totals, &["kept".to_owned()]);
        let got: Vec<(&str, u64)> = totals.iter().map(|t| (t.rule.as_str(), t.loads.denied)).collect();
        assert_eq!(got, [("kept", 2), (DEFAULT_RULE, 3), (RETIRED_RULES, 5)]);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_503_267), "2026-12-05T20:41:07Z");
    }

    #[test]
    fn start_time_of_this_process() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
