//! The enforcement loop behind `bpfgate enforce`: load the gate, install the policy file, attach, print every
//! decision, reload on request (a bad policy is refused and the one in force stays), install the policy in force
//! again when an executable it names is replaced, renamed or deleted ([`crate::identity`]), stop on request. The
//! CLI turns signals into [`Control`] flags; the live tests drive the same loop directly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bpfgate::policy::compiled::{self, CompiledPolicy};
use bpfgate::policy::{Policy, PolicyErrors};

use crate::event::{Event, RawEvent};
use crate::identity::{Identities, IdentityResolver};
use crate::metrics::ClassCounts;
use crate::preflight::PreflightError;
use crate::{Gate, GateError, HostResolver, Installed, PolicySource};

/// Requests to a running loop, settable from a signal handler (atomic stores only).
#[derive(Debug, Default)]
pub struct Control {
    pub reload: AtomicBool,
    pub stop: AtomicBool,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// YAML, or CBOR from `bpfgate policy compile`; re-read on every reload.
    pub policy: PathBuf,
    /// Report instead of deny, whatever the policy's mode says.
    pub audit: bool,
    /// JSON Lines instead of text.
    pub json: bool,
    /// Pin the gate's links and maps in this directory so enforcement outlives the daemon (`--persist`).
    pub persist: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`--metrics`, [`crate::metrics`]).
    pub metrics: Option<std::net::SocketAddr>,
    /// When to attach the link guard (`--guard-links`: always).
    pub link_guard: crate::LinkGuard,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The kernel cannot run the gate; the message says what to do.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: std::io::Error },
    /// The policy file is neither a compiled policy nor UTF-8.
    #[error("{file}: neither a compiled policy nor UTF-8 YAML")]
    NotAPolicy { file: String },
    /// The YAML policy does not parse or compile: every error, located.
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("writing decisions: {0}")]
    Output(std::io::Error),
    #[error("a persisted gate is already enforcing (pinned in {0}); `bpfgate enforce --stop` removes it")]
    Persisted(String),
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics { addr: std::net::SocketAddr, error: std::io::Error },
}

/// Counts at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub decisions: u64,
    pub denials: u64,
    pub dropped: u64,
    pub reloads: u32,
    pub refused_reloads: u32,
    /// Installs of the policy in force with fresh identities, after a watched executable changed.
    pub re_resolutions: u32,
    /// Refreshes of the module kfuncs after the kernel's modules with BTF changed.
    pub module_refreshes: u32,
}

/// The kernel's module BTF objects as `/sys/kernel/btf` lists them (name and inode: a module unloaded and loaded
/// again between two looks has a new one). The loop looks every 100 ms, a directory read, and maps the kfuncs of
/// modules loaded since: without it they stayed `unknown` until the next reload.
#[derive(PartialEq, Eq)]
struct ModuleBtfs(Vec<(std::ffi::OsString, u64)>);

impl ModuleBtfs {
    fn read() -> ModuleBtfs {
        use std::os::unix::fs::DirEntryExt;
        let mut v: Vec<_> = std::fs::read_dir("/sys/kernel/btf")
            .map(|d| {
                d.filter_map(Result::ok).map(|e| (e.file_name(), e.ino())).filter(|(n, _)| n != "vmlinux").collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        ModuleBtfs(v)
    }
}

/// `bpfgate enforce --stop`: removes a persisted gate (its pins in `dir`), which detaches it.
pub fn stop(dir: &Path, log: &mut dyn Write) -> Result<usize, DaemonError> {
    let removed = crate::unpin(dir)?;
    if removed.is_empty() {
        let _ = writeln!(log, "bpfgate: no persisted gate in {}", dir.display());
    } else {
        let _ = writeln!(log, "bpfgate: removed {} pins from {}: the gate is detached", removed.len(), dir.display());
    }
    Ok(removed.len())
}

/// Reads a compiled policy (CBOR) or a YAML policy, which it compiles; lint warnings go to `log`.
pub fn read_policy(path: &Path, log: &mut dyn Write) -> Result<CompiledPolicy, DaemonError> {
    read_policy_file(path, log).map(|(policy, _)| policy)
}

/// [`read_policy`], and the file's path and SHA-256 for `bpfgate status`.
pub fn read_policy_file(path: &Path, log: &mut dyn Write) -> Result<(CompiledPolicy, PolicySource), DaemonError> {
    use sha2::Digest as _;
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| DaemonError::Read { file: file.clone(), error })?;
    let sha256 = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let source = PolicySource { path: file.clone(), sha256 };
    Ok((parse_policy(file, bytes, log)?, source))
}

fn parse_policy(file: String, bytes: Vec<u8>, log: &mut dyn Write) -> Result<CompiledPolicy, DaemonError> {
    if let Ok(compiled) = CompiledPolicy::from_cbor(&file, &bytes) {
        return Ok(compiled);
    }
    let text = String::from_utf8(bytes).map_err(|_| DaemonError::NotAPolicy { file: file.clone() })?;
    let policy = Policy::parse(&file, &text)?;
    for w in policy.lint() {
        let _ = writeln!(log, "bpfgate: {w}");
    }
    // The gate numbers generations itself; this header's is replaced at install.
    Ok(compiled::compile(&policy, 0)?)
}

/// Installs `policy` with executables opened and watched (`crate::identity`). The identities returned must be
/// kept while this generation is in force: they hold the files whose keys it matches.
fn install(
    gate: &mut Gate,
    (policy, source): (&CompiledPolicy, &PolicySource),
    audit: bool,
    log: &mut dyn Write,
) -> Result<(Installed, Identities), DaemonError> {
    gate.set_source(Some(source.clone()));
    let resolver = IdentityResolver::new(HostResolver::new(), true);
    let installed = gate.install(policy, &resolver, audit)?;
    let identities = resolver.finish();
    for p in &installed.unresolved {
        let _ =
            writeln!(log, "bpfgate: warning: {p} does not exist on this host; its rules cannot match until it appears");
    }
    if let Some(e) = &installed.status_error {
        let _ = writeln!(log, "bpfgate: warning: `bpfgate status` shows an older state: {e}");
    }
    if let Some(e) = &identities.watch_error {
        let _ = writeln!(log, "bpfgate: warning: executables not followed ({e}); SIGHUP resolves them again");
    }
    Ok((installed, identities))
}

fn print(
    gate: &Gate,
    raw: &RawEvent,
    json: bool,
    classes: &ClassCounts,
    out: &mut dyn Write,
) -> Result<(), DaemonError> {
    let event = Event::from_raw(raw, gate.names());
    classes.record(&event);
    let line = if json {
        serde_json::to_string(&event).map_err(|e| DaemonError::Output(std::io::Error::other(e)))?
    } else {
        event.to_string()
    };
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(DaemonError::Output)
}

/// What the loop tells its runner about its state; `bpfgate enforce` turns it into systemd notifications
/// (sd_notify READY=1, RELOADING=1, STOPPING=1).
pub trait Lifecycle {
    /// The gate is attached and the first policy installed (and pinned, with `--persist`).
    fn ready(&mut self);
    /// A reload request was taken: the policy file is about to be read again.
    fn reloading(&mut self) {}
    /// The reload ended: the generation now in force, or the error that refused the new policy (the one in
    /// force stays, so the gate is enforcing either way).
    fn reloaded(&mut self, _result: Result<u64, &DaemonError>) {}
    /// The loop saw `control.stop` and is stopping.
    fn stopping(&mut self) {}
}

struct ReadyOnly<'a>(&'a mut dyn FnMut());

impl Lifecycle for ReadyOnly<'_> {
    fn ready(&mut self) {
        (self.0)();
    }
}

/// Runs until `control.stop`. `ready` is called once the gate is attached and enforcing. The gate is detached
/// before returning, on success and on error (its link is bound to this process either way).
pub fn run(
    opts: &Options,
    control: &Control,
    out: &mut dyn Write,
    log: &mut dyn Write,
    ready: &mut dyn FnMut(),
) -> Result<Summary, DaemonError> {
    run_with(opts, control, out, log, &mut ReadyOnly(ready))
}

/// [`run`], telling `lifecycle` when the gate is ready, around each reload, and when it stops.
pub fn run_with(
    opts: &Options,
    control: &Control,
    out: &mut dyn Write,
    log: &mut dyn Write,
    lifecycle: &mut dyn Lifecycle,
) -> Result<Summary, DaemonError> {
    // A kernel that cannot run the gate, then a bad policy, are errors before anything is loaded.
    let facts = crate::preflight::KernelFacts::read();
    crate::preflight::check(&facts)?;
    if let Some(notice) = crate::preflight::notice(&facts) {
        let _ = writeln!(log, "bpfgate: {notice}");
    }
    let first = read_policy_file(&opts.policy, log)?;
    if let Some(dir) = &opts.persist {
        if dir.exists() {
            return Err(DaemonError::Persisted(dir.display().to_string()));
        }
    }
    // An address that cannot be served is an error before anything is loaded.
    let listener = match opts.metrics {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|error| DaemonError::Metrics { addr, error })?),
        None => None,
    };
    let classes = std::sync::Arc::new(ClassCounts::default());
    let mut gate = Gate::load()?;
    // The policy in force, kept to install again with fresh identities when an executable it names changes.
    let (installed, mut identities) = install(&mut gate, (&first.0, &first.1), opts.audit, log)?;
    let mut in_force = first;
    let mut stream = gate.events()?;
    gate.set_link_guard(opts.link_guard);
    gate.attach()?;
    if let Some(listener) = listener {
        let reader = gate.reader()?;
        let classes = std::sync::Arc::clone(&classes);
        if let Ok(addr) = listener.local_addr() {
            let _ = writeln!(log, "bpfgate: metrics at http://{addr}/metrics");
        }
        // Detached: it serves until the process ends.
        std::thread::spawn(move || crate::metrics::serve(listener, reader, classes));
    }
    if let Some(dir) = &opts.persist {
        if let Err(e) = gate.persist(dir) {
            // Half-pinned is neither mode: take it back and fail.
            let _ = crate::unpin(dir);
            return Err(e.into());
        }
        let _ = writeln!(log, "bpfgate: pinned in {}: enforcement stays when this process exits", dir.display());
    }
    let _ = writeln!(
        log,
        "bpfgate: enforcing {} (generation {}{}); {} catalogued kfuncs in this kernel",
        opts.policy.display(),
        installed.generation,
        if opts.audit { ", audit mode" } else { "" },
        gate.kfuncs_found()
    );
    lifecycle.ready();
    let (mut reloads, mut refused_reloads, mut re_resolutions, mut module_refreshes) = (0, 0, 0, 0);
    let mut modules = ModuleBtfs::read();
    while !control.stop.load(Ordering::SeqCst) {
        for raw in stream.poll(Duration::from_millis(100))? {
            print(&gate, &raw, opts.json, &classes, out)?;
        }
        let now = ModuleBtfs::read();
        if now != modules {
            modules = now;
            module_refreshes += 1;
            match gate.refresh_kfuncs() {
                Ok(()) => {
                    let (n, found) = (modules.0.len(), gate.kfuncs_found());
                    let _ =
                        writeln!(log, "bpfgate: {n} modules with BTF now: {found} catalogued kfuncs in this kernel");
                }
                Err(e) => {
                    let _ = writeln!(log, "bpfgate: warning: module kfuncs not refreshed: {e}");
                }
            }
        }
        if control.reload.swap(false, Ordering::SeqCst) {
            lifecycle.reloading();
            // Decisions made before the switch print with the old generation's rule names.
            for raw in stream.drain()? {
                print(&gate, &raw, opts.json, &classes, out)?;
            }
            // Modules loaded since the start (or the last reload) get their kfuncs mapped.
            if let Err(e) = gate.refresh_kfuncs() {
                let _ = writeln!(log, "bpfgate: warning: module kfuncs not refreshed: {e}");
            }
            match read_policy_file(&opts.policy, log)
                .and_then(|p| Ok((install(&mut gate, (&p.0, &p.1), opts.audit, log)?, p)))
            {
                Ok(((installed, ids), policy)) => {
                    // The old generation's files are let go only now that it is out of force.
                    (identities, in_force) = (ids, policy);
                    reloads += 1;
                    let generation = installed.generation;
                    let _ = writeln!(log, "bpfgate: reloaded {} (generation {generation})", opts.policy.display());
                    lifecycle.reloaded(Ok(generation));
                }
                Err(e) => {
                    refused_reloads += 1;
                    let _ = writeln!(
                        log,
                        "bpfgate: reload refused, generation {} stays in force: {e}",
                        gate.generation().unwrap_or(0)
                    );
                    lifecycle.reloaded(Err(&e));
                }
            }
        }
        // An executable the policy names was replaced, renamed, deleted or created: the same policy again,
        // with fresh identities, through the same atomic switch.
        let changed = identities.changed().unwrap_or_else(|e| vec![format!("(inotify failed: {e})")]);
        if !changed.is_empty() {
            let started = Instant::now();
            for raw in stream.drain()? {
                print(&gate, &raw, opts.json, &classes, out)?;
            }
            match install(&mut gate, (&in_force.0, &in_force.1), opts.audit, log) {
                Ok((installed, ids)) => {
                    let changes = ids.describe_changes(&identities);
                    identities = ids;
                    re_resolutions += 1;
                    let _ = writeln!(
                        log,
                        "bpfgate: {} changed: executables resolved again in {} ms (generation {}): {}",
                        changed.join(", "),
                        started.elapsed().as_millis(),
                        installed.generation,
                        if changes.is_empty() { "no identity changed".to_owned() } else { changes.join("; ") }
                    );
                }
                Err(e) => {
                    // The old identities and their watches stay; the next change tries again.
                    let _ = writeln!(
                        log,
                        "bpfgate: {} changed but could not be resolved again, generation {} stays in force: {e}",
                        changed.join(", "),
                        gate.generation().unwrap_or(0)
                    );
                }
            }
        }
    }
    lifecycle.stopping();
    // Pinned links stay attached after this: only the pins hold them then.
    gate.detach();
    for raw in stream.drain()? {
        print(&gate, &raw, opts.json, &classes, out)?;
    }
    let (decisions, denials) = gate.counters();
    let dropped = gate.dropped()?;
    let _ = writeln!(log, "bpfgate: stopped; {decisions} decisions, {denials} denials, {dropped} events dropped");
    if let Some(dir) = &opts.persist {
        let _ = writeln!(log, "bpfgate: the gate stays attached (pinned in {})", dir.display());
    }
    Ok(Summary { decisions, denials, dropped, reloads, refused_reloads, re_resolutions, module_refreshes })
}
