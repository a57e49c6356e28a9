//! The loader: opens and loads `gate.bpf.c`, fills its kfunc table from the running kernel's BTF, installs
//! compiled policies in two slots with one atomic switch, attaches the LSM hook, and streams decisions.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bpfgate::gate_abi::{
    Header, KfuncKey, ObjectKey, PolicyCgroupKey, PolicyExeKey, PolicyUidKey, KIND_LINK, KIND_MAP, KIND_PROG,
    MAX_MAP_PATTERNS, MAX_RULES, MAX_SUBJECT_KEYS, MAX_TARGET_PATTERNS, MODE_AUDIT,
};
use bpfgate::policy::compiled::{self, CompiledPolicy, KernelTables, Resolver};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{libbpf_sys, Link, MapCore, MapFlags, MapHandle, MapType, RingBuffer, RingBufferBuilder};

use crate::event::{Names, RawEvent};

mod skel {
    include!(concat!(env!("OUT_DIR"), "/gate.skel.rs"));
}
use skel::{GateSkel, GateSkelBuilder};

/// When the gate attaches its link guard, `lsm/bpf`: the program that refuses `BPF_LINK_GET_FD_BY_ID` of the
/// gate's links to anyone but its daemon. It runs on every `bpf()` call (every map lookup an agent makes), so it
/// is attached only where a link fd is a threat (gate-bpf/README.md, "The hot path").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkGuard {
    /// Where an fd to one of the gate's links could detach it or replace its program: probed on the first link
    /// the gate attaches (`BPF_LINK_UPDATE` and `BPF_LINK_DETACH`), or named in the kernel's BTF.
    #[default]
    Auto,
    /// Always (`bpfgate enforce --guard-links`).
    Always,
}

/// Which variant of the `bpf`, `bpf_map_create` and `bpf_prog_load` hooks matches the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVariant {
    /// No `security_bpf_prog_load` (before 6.9; Debian bookworm's 6.1): loads are scanned at
    /// `fentry/bpf_check` and decided at `lsm/bpf_prog`; map owners at `lsm/bpf_map_alloc_security`,
    /// records dropped at `lsm/bpf_map_free_security` and `lsm/bpf_prog_free_security` (`legacy.bpf.h`).
    Legacy,
    /// `(prog, attr, token)`: up to 6.15.
    ThreeArgs,
    /// `(prog, attr, token, kernel)`: 6.16 and later.
    FourArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(std::io::Error),
    #[error("the kernel's BTF has no bpf_lsm_bpf: BPF LSM is not built into this kernel")]
    NoBpfLsm,
    #[error(
        "the kernel's BTF has neither bpf_lsm_bpf_prog_load (6.9+) nor what the gate uses without it \
         (bpf_check, bpf_lsm_bpf_prog_free_security, bpf_lsm_bpf_map_alloc_security)"
    )]
    NoHook,
    #[error("bpf_lsm_bpf_prog_load takes {0} arguments; the gate knows 3 (up to 6.15) and 4 (6.16+)")]
    UnknownHook(u16),
    /// The libbpf error is in the message, not the source chain, so `{:#}` does not print it twice.
    #[error("{what}: {error}")]
    Bpf { what: String, error: libbpf_rs::Error },
    #[error(transparent)]
    Policy(#[from] compiled::CompiledError),
    #[error("the policy has {count} {what}; the gate holds at most {max}")]
    Limit { what: &'static str, count: usize, max: usize },
    #[error("the gate's .bss is not memory-mapped")]
    NoBss,
    #[error("{what} {path}: {error}")]
    Pins { what: &'static str, path: String, error: std::io::Error },
    #[error("the pins are removed, but the kernel still holds the gate's program {prog_id} after {waited:?}")]
    StillAttached { prog_id: u32, waited: Duration },
    #[error("the gate's status record: {0}")]
    Status(#[from] crate::status::StatusError),
}

/// The running kernel's `__BPF_FUNC_MAX_ID` (`enum bpf_func_id` in its BTF): helper ids at or past it are refused
/// by the verifier wherever they are reachable ([`bpfgate::target`]). None when the BTF cannot be read or lacks
/// the enum.
pub fn kernel_helper_max_id() -> Option<u32> {
    KernelBtf::vmlinux().ok().as_ref().and_then(helper_max_id)
}

fn helper_max_id(btf: &KernelBtf) -> Option<u32> {
    btf.enum_value("bpf_func_id", "__BPF_FUNC_MAX_ID").and_then(|v| u32::try_from(v).ok()).filter(|&v| v > 0)
}

/// Where `bpfgate enforce --persist` pins the gate by default (one file per link and map).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/bpfgate";

fn bpf(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> GateError {
    let what = what.into();
    move |error| GateError::Bpf { what, error }
}

/// The running kernel's vmlinux BTF, or a module's (split on vmlinux's), through libbpf.
struct KernelBtf(*mut libbpf_sys::btf);

impl KernelBtf {
    fn vmlinux() -> Result<KernelBtf, GateError> {
        // SAFETY: no preconditions; returns NULL (errno set) on failure.
        let ptr = unsafe { libbpf_sys::btf__load_vmlinux_btf() };
        if ptr.is_null() {
            return Err(GateError::Btf(std::io::Error::last_os_error()));
        }
        Ok(KernelBtf(ptr))
    }

    /// The BTF object `id` (a module's), split on `self`; None if it went away meanwhile.
    fn module(&self, id: u32) -> Option<KernelBtf> {
        // SAFETY: self.0 is a live BTF object; returns NULL (errno set) on failure.
        let ptr = unsafe { libbpf_sys::btf__load_from_kernel_by_id_split(id, self.0) };
        (!ptr.is_null()).then_some(KernelBtf(ptr))
    }

    /// The functions this BTF defines itself (not its base's): (BTF id, name).
    fn own_funcs(&self) -> Vec<(u32, String)> {
        // SAFETY: self.0 is a live BTF object; btf__base_btf returns its base or NULL.
        let (base, count) = unsafe { (libbpf_sys::btf__base_btf(self.0), libbpf_sys::btf__type_cnt(self.0)) };
        // SAFETY: base, when not NULL, is the live BTF object self was split on.
        let first = if base.is_null() { 1 } else { unsafe { libbpf_sys::btf__type_cnt(base) } };
        let mut funcs = Vec::new();
        for id in first..count {
            // SAFETY: ids below btf__type_cnt are in range; libbpf returns NULL otherwise.
            let Some(t) = (unsafe { libbpf_sys::btf__type_by_id(self.0, id).as_ref() }) else { continue };
            if (t.info >> 24) & 0x1f != libbpf_sys::BTF_KIND_FUNC {
                continue;
            }
            // SAFETY: name offsets of the object's own types are valid; libbpf returns NULL otherwise.
            let name = unsafe { libbpf_sys::btf__name_by_offset(self.0, t.name_off) };
            if !name.is_null() {
                // SAFETY: libbpf's strings are NUL-terminated and live as long as the object.
                funcs.push((id, unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()));
            }
        }
        funcs
    }

    /// The BTF id of the function named `name`.
    fn func(&self, name: &str) -> Option<u32> {
        let c = CString::new(name).ok()?;
        // SAFETY: self.0 is a live BTF object and c a NUL-terminated string.
        let id = unsafe { libbpf_sys::btf__find_by_name_kind(self.0, c.as_ptr(), libbpf_sys::BTF_KIND_FUNC) };
        u32::try_from(id).ok().filter(|&id| id > 0)
    }

    /// The value of enumerator `name` of the enum named `enum_name`.
    fn enum_value(&self, enum_name: &str, name: &str) -> Option<i64> {
        let c = CString::new(enum_name).ok()?;
        // SAFETY: self.0 is a live BTF object and c a NUL-terminated string.
        let id = unsafe { libbpf_sys::btf__find_by_name_kind(self.0, c.as_ptr(), libbpf_sys::BTF_KIND_ENUM) };
        let id = u32::try_from(id).ok().filter(|&id| id > 0)?;
        // SAFETY: self.0 is a live BTF object; libbpf returns NULL for ids out of range.
        let t = unsafe { libbpf_sys::btf__type_by_id(self.0, id) };
        if t.is_null() {
            return None;
        }
        // SAFETY: t points at a btf_type inside the object.
        let vlen = unsafe { (*t).info } & 0xffff;
        // SAFETY: an ENUM's btf_enum entries follow its btf_type in the object's type data (libbpf's
        // btf_enum()), vlen of them.
        let entries = unsafe { std::slice::from_raw_parts(t.add(1).cast::<libbpf_sys::btf_enum>(), vlen as usize) };
        entries.iter().find_map(|e| {
            // SAFETY: name offsets of the object's types are valid; libbpf returns NULL otherwise.
            let n = unsafe { libbpf_sys::btf__name_by_offset(self.0, e.name_off) };
            // SAFETY: libbpf's strings are NUL-terminated and live as long as the object.
            (!n.is_null() && unsafe { std::ffi::CStr::from_ptr(n) }.to_bytes() == name.as_bytes())
                .then_some(i64::from(e.val))
        })
    }

    /// `(kind, vlen, type)` of type `id`.
    fn type_info(&self, id: u32) -> Option<(u32, u16, u32)> {
        // SAFETY: self.0 is a live BTF object; libbpf returns NULL for ids out of range.
        let t = unsafe { libbpf_sys::btf__type_by_id(self.0, id) };
        // SAFETY: non-null pointers from btf__type_by_id point at a btf_type inside the object.
        let t = unsafe { t.as_ref() }?;
        // SAFETY: every BTF type has the size/type union; reading it as u32 is always valid.
        let ty = unsafe { t.__bindgen_anon_1.type_ };
        Some(((t.info >> 24) & 0x1f, (t.info & 0xffff) as u16, ty))
    }
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        // SAFETY: self.0 came from btf__load_vmlinux_btf or btf__load_from_kernel_by_id_split and is freed once.
        unsafe { libbpf_sys::btf__free(self.0) }
    }
}

/// The kernel's own BTF objects (vmlinux's and the modules', not programs'), as BPF_BTF_GET_NEXT_ID lists them:
/// (id, name).
pub fn kernel_btfs() -> Vec<(u32, String)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut id, mut found) = (0u32, Vec::new());
    // SAFETY: next is a valid out-pointer; the loop ends when the kernel reports no further id.
    while unsafe { libbpf_sys::bpf_btf_get_next_id(id, &mut id) } == 0 {
        // SAFETY: no preconditions; a negative result means the object went away meanwhile.
        let fd = unsafe { libbpf_sys::bpf_btf_get_fd_by_id(id) };
        if fd < 0 {
            continue;
        }
        // SAFETY: fd was just returned to us and is closed once, when `_owned` drops.
        let _owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut name = [0u8; 64];
        let mut info = libbpf_sys::bpf_btf_info {
            name: name.as_mut_ptr() as u64,
            name_len: name.len() as u32,
            ..Default::default()
        };
        let mut len = size_of_val(&info) as u32;
        // SAFETY: the kernel writes at most len bytes into info and name_len bytes into name.
        if unsafe { libbpf_sys::bpf_btf_get_info_by_fd(fd, &mut info, &mut len) } != 0 {
            continue;
        }
        if info.kernel_btf != 0 {
            found.push((id, crate::event::c_str(&name)));
        }
    }
    found
}

/// The ids of the modules' BTF objects.
fn module_btf_ids() -> Vec<u32> {
    kernel_btfs().into_iter().filter(|(_, name)| name != "vmlinux").map(|(id, _)| id).collect()
}

/// Operations on tracing links (the gate's: lsm, fentry, fexit) that the kernels up to 7.2 do not have; a kernel
/// whose BTF names one of them gets the link guard whatever the probe says.
const TRACING_LINK_OPS: [&str; 2] = ["bpf_tracing_link_detach", "bpf_tracing_link_update_prog"];

/// What an fd to one of the gate's links can do on this kernel, probed on one of them.
struct Takeover {
    /// `BPF_LINK_UPDATE` or `BPF_LINK_DETACH` did not answer "not supported".
    possible: bool,
    /// The probe detached the link: attach it again.
    detached: bool,
}

/// Asks the kernel to replace `link`'s program with itself and to detach it. A kernel without these operations
/// for tracing links answers `EINVAL` (no `update_prog`) and `EOPNOTSUPP` (no `detach`); any other answer,
/// success included, means a link fd could take the gate over.
fn link_takeover(link: &Link, prog: std::os::fd::BorrowedFd<'_>) -> Takeover {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = link.as_fd().as_raw_fd();
    // SAFETY: plain syscalls on two fds this process owns; no options (NULL is allowed).
    let update = unsafe { libbpf_sys::bpf_link_update(fd, prog.as_raw_fd(), std::ptr::null()) };
    // SAFETY: as above.
    let detach = unsafe { libbpf_sys::bpf_link_detach(fd) };
    Takeover { possible: update != -libc::EINVAL || detach != -libc::EOPNOTSUPP, detached: detach == 0 }
}

/// The hook's prototype in the running kernel decides the program variant; a kernel without the hook takes
/// the fentry/bpf_check variant when it has what that needs.
fn hook_variant(btf: &KernelBtf) -> Result<HookVariant, GateError> {
    if btf.func("bpf_lsm_bpf").is_none() {
        return Err(GateError::NoBpfLsm);
    }
    let Some(func) = btf.func("bpf_lsm_bpf_prog_load") else {
        let legacy = ["bpf_check", "bpf_lsm_bpf_prog_free_security", "bpf_lsm_bpf_map_alloc_security"];
        return match legacy.iter().all(|f| btf.func(f).is_some()) {
            true => Ok(HookVariant::Legacy),
            false => Err(GateError::NoHook),
        };
    };
    let (_, _, proto) = btf.type_info(func).ok_or(GateError::NoHook)?;
    match btf.type_info(proto) {
        Some((kind, 3, _)) if kind == libbpf_sys::BTF_KIND_FUNC_PROTO => Ok(HookVariant::ThreeArgs),
        Some((kind, 4, _)) if kind == libbpf_sys::BTF_KIND_FUNC_PROTO => Ok(HookVariant::FourArgs),
        Some((_, n, _)) => Err(GateError::UnknownHook(n)),
        None => Err(GateError::NoHook),
    }
}

/// Map keys of one policy slot, remembered so the slot can be emptied before it is reused.
#[derive(Debug, Default)]
struct SlotKeys {
    exe: Vec<[u8; PolicyExeKey::SIZE]>,
    cgroup: Vec<[u8; PolicyCgroupKey::SIZE]>,
    uid: Vec<[u8; PolicyUidKey::SIZE]>,
}

/// What [`Gate::install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The generation the gate's events carry for decisions by this policy.
    pub generation: u64,
    /// Policy paths that resolved to nothing on this host: their rules cannot match.
    pub unresolved: Vec<String>,
    /// The policy is in force, but `bpfgate status` could not be told (the record was not written): why.
    pub status_error: Option<String>,
}

/// The gate's links in attachment order. They are detached in the reverse order, when dropped too: `fentry` on
/// `bpf_obj_get_user` before its `fexit`, so no call runs the one without the other (gate.bpf.c).
struct Links(Vec<(&'static str, Link)>);

impl Links {
    fn detach(&mut self) {
        while self.0.pop().is_some() {}
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The loaded gate. Dropping it detaches the hooks and unloads everything (links are fd-bound).
pub struct Gate {
    // Declared first so they are dropped first: detach before unloading. (hook, link), in attachment order.
    links: Links,
    skel: GateSkel<'static>,
    variant: HookVariant,
    /// The slot decisions read, once a policy is installed.
    active: Option<u32>,
    slots: [SlotKeys; 2],
    next_generation: u64,
    /// An inner map for `sync_rcu` updates.
    sync_inner: MapHandle,
    names: Names,
    kfuncs_found: usize,
    /// `kfunc_classes` keys of module kfuncs, dropped when [`Gate::refresh_kfuncs`] finds the module gone.
    module_kfuncs: Vec<[u8; KfuncKey::SIZE]>,
    /// `module_kfunc_owners` keys: module kfunc BTF ids only one module has (when a call's fd_array slot
    /// cannot be read, the gate takes that module).
    module_kfunc_owners: Vec<u32>,
    /// The gate's own maps, programs and links, as recorded for self-protection.
    objects: Vec<GateObject>,
    /// What `bpfgate status` reads (crate::status): the record, its map, and the policy file installed next.
    status_map: MapHandle,
    record: crate::status::Record,
    record_seq: u64,
    source: Option<PolicySource>,
    /// Held while a retired generation's counts move into the record (crate::status::GateReader).
    status_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// The kernel's `__BPF_FUNC_MAX_ID`, compiled into the gate (None: unknown, only libbpf's poison ids are
    /// taken as not executable).
    helper_max_id: Option<u32>,
    link_guard: LinkGuard,
    /// The kernel's BTF names an operation that detaches a tracing link or replaces its program.
    link_ops_in_btf: bool,
}

/// Where the next installed policy came from, for `bpfgate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub path: String,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub sha256: String,
}

/// One of the gate's own kernel objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateObject {
    Map(u32),
    Prog(u32),
    Link(u32),
}

impl Gate {
    /// Loads the gate (verifies the program matching this kernel) and fills the kfunc table. Nothing is
    /// enforced until [`Gate::install`] and [`Gate::attach`].
    pub fn load() -> Result<Gate, GateError> {
        let btf = KernelBtf::vmlinux()?;
        let variant = hook_variant(&btf)?;

        // The skeleton borrows its object storage for its whole life; one small leak per gate, and the
        // object itself is still closed when the skeleton drops.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = GateSkelBuilder::default().open(storage).map_err(bpf("opening the gate object"))?;
        let (three, four, legacy) =
            (variant == HookVariant::ThreeArgs, variant == HookVariant::FourArgs, variant == HookVariant::Legacy);
        open.progs.gate_prog_load_v3.set_autoload(three);
        open.progs.gate_map_create_v3.set_autoload(three);
        open.progs.gate_bpf_v3.set_autoload(three || legacy);
        open.progs.gate_prog_load_v4.set_autoload(four);
        open.progs.gate_map_create_v4.set_autoload(four);
        open.progs.gate_bpf_v4.set_autoload(four);
        open.progs.gate_map_free.set_autoload(!legacy);
        open.progs.gate_prog_free.set_autoload(!legacy);
        open.progs.gate_check_scan.set_autoload(legacy);
        open.progs.gate_prog_alloc.set_autoload(legacy);
        open.progs.gate_map_alloc.set_autoload(legacy);
        open.progs.gate_map_free_legacy.set_autoload(legacy);
        open.progs.gate_prog_free_legacy.set_autoload(legacy);
        // The gate's maps, programs and links obey this process only (self-protection): its tgid, and its
        // executable, so that a later process that happens to get the same pid is not taken for it.
        let exe = std::fs::metadata("/proc/self/exe").map_err(|error| GateError::Pins {
            what: "cannot stat",
            path: "/proc/self/exe".into(),
            error,
        })?;
        // One jump_targets entry per CPU: the scan's first pass writes the entry of the CPU it runs on.
        let cpus = libbpf_rs::num_possible_cpus().map_err(bpf("counting possible CPUs"))?;
        open.maps
            .jump_targets
            .set_max_entries(u32::try_from(cpus).unwrap_or(u32::MAX))
            .map_err(bpf("sizing jump_targets"))?;
        let rodata = open.maps.rodata_data.as_deref_mut().ok_or(GateError::NoBss)?;
        rodata.gate_daemon_tgid = std::process::id();
        rodata.gate_daemon_dev = crate::resolve::kernel_dev(std::os::unix::fs::MetadataExt::dev(&exe));
        rodata.gate_daemon_ino = std::os::unix::fs::MetadataExt::ino(&exe);
        rodata.gate_fentry_scan = legacy;
        // Helper calls past the kernel's last helper cannot run (the verifier refuses them): they grant nothing.
        let helper_max_id = helper_max_id(&btf);
        rodata.gate_helper_max_id = helper_max_id.unwrap_or(0);
        let skel = open.load().map_err(bpf("loading the gate program (verifier)"))?;

        let opts = libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
            ..Default::default()
        };
        let sync_inner = MapHandle::create(MapType::Array, Some("bpfgate_sync"), 4, 4, 1, &opts)
            .map_err(bpf("creating the RCU sync map"))?;
        let status_map = MapHandle::create(
            MapType::Array,
            Some(crate::status::STATUS_MAP),
            4,
            crate::status::RECORD_SIZE as u32,
            1,
            &opts,
        )
        .map_err(bpf("creating the status map"))?;
        let record = {
            use std::os::fd::{AsFd, AsRawFd};
            crate::status::Record {
                daemon_pid: std::process::id(),
                daemon_start: crate::status::start_time(std::process::id()).unwrap_or(0),
                counters_map_id: object_id(skel.maps.decision_counts.as_fd().as_raw_fd())?,
                dropped_map_id: object_id(skel.maps.dropped.as_fd().as_raw_fd())?,
                ..Default::default()
            }
        };

        let mut gate = Gate {
            links: Links(Vec::new()),
            skel,
            variant,
            active: None,
            slots: [SlotKeys::default(), SlotKeys::default()],
            next_generation: 1,
            sync_inner,
            names: Names::default(),
            kfuncs_found: 0,
            module_kfuncs: Vec::new(),
            module_kfunc_owners: Vec::new(),
            objects: Vec::new(),
            status_map,
            record,
            record_seq: 0,
            source: None,
            status_lock: std::sync::Arc::default(),
            helper_max_id,
            link_guard: LinkGuard::Auto,
            link_ops_in_btf: TRACING_LINK_OPS.iter().any(|f| btf.func(f).is_some()),
        };
        gate.fill_kfuncs(&btf)?;
        gate.protect_objects()?;
        gate.publish()?;
        Ok(gate)
    }

    /// Records the ids of the gate's maps and programs, which only this process may then open writable.
    fn protect_objects(&mut self) -> Result<(), GateError> {
        use std::os::fd::{AsFd, AsRawFd};
        let mut objects = Vec::new();
        for map in self.skel.object().maps() {
            objects.push((KIND_MAP, map.as_fd().as_raw_fd()));
        }
        objects.push((KIND_MAP, self.sync_inner.as_fd().as_raw_fd()));
        objects.push((KIND_MAP, self.status_map.as_fd().as_raw_fd()));
        for prog in self.skel.object().progs() {
            if prog.autoload() {
                objects.push((KIND_PROG, prog.as_fd().as_raw_fd()));
            }
        }
        for (kind, fd) in objects {
            self.protect(kind, fd)?;
        }
        Ok(())
    }

    fn protect(&mut self, kind: u32, fd: i32) -> Result<(), GateError> {
        let id = object_id(fd)?;
        self.objects.push(match kind {
            KIND_MAP => GateObject::Map(id),
            KIND_PROG => GateObject::Prog(id),
            _ => GateObject::Link(id),
        });
        self.skel
            .maps
            .gate_objects
            .update(&object_key(kind, id), &1u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("recording one of the gate's objects"))
    }

    /// Catalogued kfuncs present in vmlinux and in the modules loaded now, by (BTF object, BTF id): the
    /// gate's scan looks a call up by the object its fd_array slot names (0 for vmlinux).
    fn fill_kfuncs(&mut self, vmlinux: &KernelBtf) -> Result<(), GateError> {
        for (index, k) in bpfgate::helpers::KFUNCS.iter().enumerate() {
            if let Some(id) = vmlinux.func(k.name) {
                self.record_kfunc(0, id, index)?;
            }
        }
        self.fill_module_kfuncs(vmlinux)
    }

    /// Module kfuncs into `kfunc_classes`, and the ids only one module has into `module_kfunc_owners`
    /// (replacing the owners recorded before).
    fn fill_module_kfuncs(&mut self, vmlinux: &KernelBtf) -> Result<(), GateError> {
        let catalogue: std::collections::HashMap<&str, usize> =
            bpfgate::helpers::KFUNCS.iter().enumerate().map(|(i, k)| (k.name, i)).collect();
        // Each id's module, None once a second module has a catalogued kfunc at that id too.
        let mut owners: std::collections::BTreeMap<u32, Option<u32>> = std::collections::BTreeMap::new();
        for obj in module_btf_ids() {
            let Some(module) = vmlinux.module(obj) else { continue };
            for (id, name) in module.own_funcs() {
                if let Some(&index) = catalogue.get(name.as_str()) {
                    let key = self.record_kfunc(obj, id, index)?;
                    self.module_kfuncs.push(key);
                    owners.entry(id).and_modify(|o| *o = o.filter(|&o| o == obj)).or_insert(Some(obj));
                }
            }
        }
        let map = &self.skel.maps.module_kfunc_owners;
        let unique: std::collections::BTreeMap<u32, u32> =
            owners.into_iter().filter_map(|(id, o)| Some((id, o?))).collect();
        for (id, obj) in &unique {
            map.update(&id.to_ne_bytes(), &obj.to_ne_bytes(), MapFlags::ANY)
                .map_err(bpf("recording a module kfunc's owner"))?;
        }
        for id in self.module_kfunc_owners.iter().filter(|id| !unique.contains_key(id)) {
            delete_if_present(map, &id.to_ne_bytes(), "a module kfunc's owner")?;
        }
        self.module_kfunc_owners = unique.into_keys().collect();
        Ok(())
    }

    /// Records `KFUNCS[index]` as BTF id `id` of BTF object `obj` (0: vmlinux); returns the map key.
    fn record_kfunc(&mut self, obj: u32, id: u32, index: usize) -> Result<[u8; KfuncKey::SIZE], GateError> {
        let k = &bpfgate::helpers::KFUNCS[index];
        let value = bpfgate::kernel_view::kfunc_value(k, index);
        let key = KfuncKey { btf_obj: obj, btf_id: id }.to_ne_bytes();
        self.skel
            .maps
            .kfunc_classes
            .update(&key, &value.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf(format!("recording kfunc {}", k.name)))?;
        self.kfuncs_found += 1;
        Ok(key)
    }

    /// Maps the kfuncs of modules loaded since the gate started (or the last refresh) and forgets those of
    /// modules since unloaded. Until then a module's kfuncs are `unknown` to the gate. The daemon refreshes
    /// on every policy reload and when `/sys/kernel/btf` changes.
    pub fn refresh_kfuncs(&mut self) -> Result<(), GateError> {
        let vmlinux = KernelBtf::vmlinux()?;
        let old = std::mem::take(&mut self.module_kfuncs);
        self.kfuncs_found -= old.len();
        // Entries still valid are overwritten in place, so no load finds them missing meanwhile.
        let filled = self.fill_module_kfuncs(&vmlinux);
        for key in old.iter().filter(|k| !self.module_kfuncs.contains(k)) {
            delete_if_present(&self.skel.maps.kfunc_classes, key, "an unloaded module's kfunc")?;
        }
        filled
    }

    pub fn variant(&self) -> HookVariant {
        self.variant
    }

    /// The gate's maps, programs and (once attached) links: only this process may open them writable.
    pub fn objects(&self) -> &[GateObject] {
        &self.objects
    }

    /// How many catalogued kfuncs the running kernel has (vmlinux and the modules mapped).
    pub fn kfuncs_found(&self) -> usize {
        self.kfuncs_found
    }

    /// The kernel's `__BPF_FUNC_MAX_ID` the gate judges helper calls by: ids at or past it grant nothing (the
    /// verifier refuses them where reachable). None when the kernel's BTF did not say.
    pub fn helper_max_id(&self) -> Option<u32> {
        self.helper_max_id
    }

    /// The library's model of this gate's target kernel: `bpfgate::InspectOptions::target`, to predict it.
    pub fn target(&self) -> bpfgate::target::Target {
        bpfgate::target::Target { helper_max_id: self.helper_max_id }
    }

    /// Names for turning raw events into readable ones (rule names by generation, kfunc names).
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// When to attach the link guard (`lsm/bpf`); [`LinkGuard::Auto`] unless set before [`Gate::attach`].
    pub fn set_link_guard(&mut self, guard: LinkGuard) {
        self.link_guard = guard;
    }

    /// Whether the link guard is attached (after [`Gate::attach`]).
    pub fn link_guarded(&self) -> bool {
        self.links.0.iter().any(|(hook, _)| *hook == "lsm/bpf")
    }

    /// Attaches the hooks. The links are fd-bound: they go away with this process.
    pub fn attach(&mut self) -> Result<(), GateError> {
        use std::os::fd::{AsFd, AsRawFd};
        if !self.links.0.is_empty() {
            return Ok(());
        }
        let p = &self.skel.progs;
        let three = self.variant == HookVariant::ThreeArgs;
        // The pin note first, its exit before its entry: both sit in bpf_obj_get_user's one trampoline, so once
        // the entry is attached every call that notes a thread also drops the note (gate.bpf.c). The exit's link,
        // the first, is also the probe of what a link fd can do here (link_takeover). Map ownership before the
        // load hook, so maps created from now on have owners by the time programs using them load.
        let (probe, probe_hook) = (&p.gate_obj_get_exit, "fexit/bpf_obj_get_user");
        let mut links = Links(Vec::new());
        let mut link = probe.attach_trace().map_err(bpf(format!("attaching {probe_hook}")))?;
        let takeover = link_takeover(&link, probe.as_fd());
        if takeover.detached {
            link = probe.attach_trace().map_err(bpf(format!("attaching {probe_hook} again")))?;
        }
        links.0.push((probe_hook, link));
        let guard = self.link_guard == LinkGuard::Always || self.link_ops_in_btf || takeover.possible;
        let four = self.variant == HookVariant::FourArgs;
        let guard = guard.then_some((if four { &p.gate_bpf_v4 } else { &p.gate_bpf_v3 }, "lsm/bpf"));
        // After the probe: the pin note's entry, then the link guard where it is wanted.
        let first = [(&p.gate_obj_get_enter, "fentry/bpf_obj_get_user")].into_iter().chain(guard);
        let hooks: Vec<_> = match self.variant {
            HookVariant::ThreeArgs | HookVariant::FourArgs => first
                .chain([
                    (if three { &p.gate_map_create_v3 } else { &p.gate_map_create_v4 }, "lsm/bpf_map_create"),
                    (&p.gate_map_free, "lsm/bpf_map_free"),
                    (&p.gate_map_fd, "lsm/bpf_map"),
                    (&p.gate_prog_fd, "lsm/bpf_prog"),
                    (&p.gate_prog_free, "lsm/bpf_prog_free"),
                    (if three { &p.gate_prog_load_v3 } else { &p.gate_prog_load_v4 }, "lsm/bpf_prog_load"),
                ])
                .collect(),
            // The free before the record (lsm/bpf_prog_alloc_security), so no record outlives its program; the
            // decision (lsm/bpf_prog) before the record and the scan (fentry/bpf_check), so a load recorded
            // never reaches an unattached decision. A load recorded that entered bpf_check before the scan was
            // attached stays unscanned, and is denied (fail closed).
            HookVariant::Legacy => first
                .chain([
                    (&p.gate_prog_free_legacy, "lsm/bpf_prog_free_security"),
                    (&p.gate_map_free_legacy, "lsm/bpf_map_free_security"),
                    (&p.gate_map_alloc, "lsm/bpf_map_alloc_security"),
                    (&p.gate_map_fd, "lsm/bpf_map"),
                    (&p.gate_prog_fd, "lsm/bpf_prog"),
                    (&p.gate_prog_alloc, "lsm/bpf_prog_alloc_security"),
                    (&p.gate_check_scan, "fentry/bpf_check"),
                ])
                .collect(),
        };
        for (prog, hook) in hooks {
            // On error the links made so far drop with `links`: nothing stays half-attached.
            let link = if hook.starts_with("lsm/") { prog.attach_lsm() } else { prog.attach_trace() };
            links.0.push((hook, link.map_err(bpf(format!("attaching {hook}")))?));
        }
        let fds: Vec<(&str, i32)> = links.0.iter().map(|(h, l)| (*h, l.as_fd().as_raw_fd())).collect();
        self.links = links;
        self.record.hooks.clear();
        for (hook, fd) in fds {
            self.protect(KIND_LINK, fd)?;
            let link_id = object_id(fd)?;
            self.record.hooks.push(crate::status::HookLink { hook: hook.to_owned(), link_id });
        }
        self.publish()
    }

    /// Pins the links and maps under `dir` (created, mode 0700), so enforcement outlives this process: the
    /// kernel keeps a pinned link attached until its pin is removed ([`unpin`]). Attach first.
    pub fn persist(&mut self, dir: &Path) -> Result<Vec<PathBuf>, GateError> {
        let pins_error = |what, path: &Path| {
            let path = path.display().to_string();
            move |error| GateError::Pins { what, path, error }
        };
        std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(pins_error("cannot create", dir))?;
        let mut pinned = Vec::new();
        for (hook, link) in &mut self.links.0 {
            let path = dir.join(format!("link_{}", hook.trim_start_matches("lsm/").replace('/', "_")));
            link.pin(&path).map_err(bpf(format!("pinning {}", path.display())))?;
            pinned.push(path);
        }
        for mut map in self.skel.object_mut().maps_mut() {
            // bpffs refuses dots in names (`gate_bpf.bss`): they are reserved for its own files.
            let path = dir.join(format!("map_{}", map.name().to_string_lossy().replace('.', "_")));
            map.pin(&path).map_err(bpf(format!("pinning {}", path.display())))?;
            pinned.push(path);
        }
        // The status record goes with the gate: `bpfgate status` reads it once the daemon is gone.
        let path = dir.join(format!("map_{}", crate::status::STATUS_MAP));
        self.status_map.pin(&path).map_err(bpf(format!("pinning {}", path.display())))?;
        pinned.push(path);
        self.record.pin_dir = Some(dir.display().to_string());
        self.publish()?;
        Ok(pinned)
    }

    /// Detaches the hooks; loads are no longer decided.
    pub fn detach(&mut self) {
        self.links.detach();
        // Their ids protect nothing once the links are gone, and gate_objects holds few entries: a gate attached
        // and detached repeatedly would fill it.
        for o in &self.objects {
            if let GateObject::Link(id) = *o {
                let _ = self.skel.maps.gate_objects.delete(&object_key(KIND_LINK, id));
            }
        }
        self.objects.retain(|o| !matches!(o, GateObject::Link(_)));
    }

    /// Resolves `policy` on this host and installs it. The slot not in use is filled completely, then one
    /// 4-byte write switches decisions to it, then the syscall waits an RCU grace period, so every decision
    /// reads exactly one generation and the old slot is quiet before it is ever rewritten. On error the
    /// policy in force stays.
    pub fn install(
        &mut self,
        policy: &CompiledPolicy,
        resolver: &dyn Resolver,
        audit: bool,
    ) -> Result<Installed, GateError> {
        policy.validate("policy")?;
        let resolved = policy.resolve(resolver);
        let mut tables = resolved.tables;
        check_limits(&tables)?;
        let generation = self.next_generation;
        // The gate counts a decision in the slot of its generation's parity (events.bpf.h).
        debug_assert_eq!(u64::from(self.active.map_or(1, |s| 1 - s)), generation & 1);
        tables.header.generation = generation;
        if audit {
            tables.header.mode = MODE_AUDIT;
        }

        let slot = match self.active {
            Some(s) => 1 - s,
            // The program starts on slot 0, which is empty (no magic: loads are allowed); fill slot 1.
            None => 1,
        };
        self.clear_slot(slot)?;
        {
            // Normally zero already (counts move into the record when a slot retires); not so for decisions
            // made without any policy, which count in slot 0.
            use std::os::fd::AsFd;
            let counters = self.skel.maps.decision_counts.as_fd().try_clone_to_owned().map_err(|error| {
                GateError::Pins { what: "cannot duplicate", path: "the decision counters' fd".into(), error }
            })?;
            crate::status::zero_slot(&counters, slot as usize)?;
        }
        self.fill_slot(slot, &tables)?;
        self.switch_to(slot)?;
        let retired = self.active.map(|old| (old, self.next_generation - 1));
        self.active = Some(slot);
        self.next_generation += 1;
        self.names.rules.insert(generation, policy.rule_names.clone());
        // The policy is in force from the switch on: a status record that cannot be written does not undo that.
        let status_error = self.record_install(generation, &tables.header, policy, &resolved.unresolved, retired).err();
        // No decision reads the old slot after the grace period: empty it now, so its subject keys (an
        // executable replaced since, whose inode number the daemon no longer holds) are nowhere in the gate.
        // A failure leaves them unread (and retried at the next install); the new policy is in force.
        let _ = self.clear_slot(1 - slot);
        Ok(Installed { generation, unresolved: resolved.unresolved, status_error: status_error.map(|e| e.to_string()) })
    }

    /// Tells the status record about the generation now in force, and moves the counts of the one it
    /// replaced (`retired`: its slot and generation, final once the switch waited for the grace period) into
    /// the record's totals before zeroing them for the slot's next generation.
    fn record_install(
        &mut self,
        generation: u64,
        header: &Header,
        policy: &CompiledPolicy,
        unresolved: &[String],
        retired: Option<(u32, u64)>,
    ) -> Result<(), GateError> {
        use std::os::fd::AsFd;
        let lock = std::sync::Arc::clone(&self.status_lock);
        let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counters = self.skel.maps.decision_counts.as_fd().try_clone_to_owned().map_err(|error| {
            GateError::Pins { what: "cannot duplicate", path: "the decision counters' fd".into(), error }
        })?;
        if let Some((old_slot, old_generation)) = retired {
            let counts = crate::status::read_counters(&counters)?;
            let names = self.names.rules.get(&old_generation).cloned().unwrap_or_default();
            let old = crate::status::slot_counts(&counts, old_slot as usize, &names);
            crate::status::add_by_name(&mut self.record.earlier, &old);
        }
        let loaded_at_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.record.policy = Some(crate::status::PolicyRecord {
            path: self.source.as_ref().map(|s| s.path.clone()),
            sha256: self.source.as_ref().map(|s| s.sha256.clone()),
            generation,
            loaded_at_unix,
            audit: header.mode == MODE_AUDIT,
            unresolved: unresolved.to_vec(),
            rules: policy.rule_names.clone(),
        });
        self.publish()?;
        if let Some((old_slot, _)) = retired {
            crate::status::zero_slot(&counters, old_slot as usize)?;
        }
        Ok(())
    }

    /// Writes the status record into its map. Totals of many rules no longer in force (a long life of reloads
    /// renaming rules) are merged into one entry when the record would not fit.
    fn publish(&mut self) -> Result<(), GateError> {
        self.record_seq += 1;
        let bytes = match crate::status::encode(&self.record, self.record_seq) {
            Err(crate::status::StatusError::TooLarge(_)) => {
                let in_force = self.record.policy.as_ref().map(|p| p.rules.clone()).unwrap_or_default();
                crate::status::merge_retired(&mut self.record.earlier, &in_force);
                crate::status::encode(&self.record, self.record_seq)?
            }
            other => other?,
        };
        self.status_map.update(&0u32.to_ne_bytes(), &bytes, MapFlags::ANY).map_err(bpf("writing the status record"))
    }

    /// Names the file the next [`Gate::install`] comes from, for `bpfgate status` and the metrics.
    pub fn set_source(&mut self, source: Option<PolicySource>) {
        self.source = source;
    }

    /// The status as `bpfgate status` reads it, through fds of this process (for the metrics endpoint).
    pub fn reader(&self) -> Result<crate::status::GateReader, GateError> {
        use std::os::fd::AsFd;
        let dup = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned().map_err(|error| GateError::Pins {
                what: "cannot duplicate",
                path: "a gate map's fd".into(),
                error,
            })
        };
        Ok(crate::status::GateReader::new(
            dup(self.status_map.as_fd())?,
            dup(self.skel.maps.decision_counts.as_fd())?,
            dup(self.skel.maps.dropped.as_fd())?,
            Some(std::sync::Arc::clone(&self.status_lock)),
        ))
    }

    fn clear_slot(&mut self, slot: u32) -> Result<(), GateError> {
        let keys = &self.slots[slot as usize];
        let maps = &self.skel.maps;
        // The header goes first: a slot without magic is never read as a policy.
        maps.policy_header
            .update(&slot.to_ne_bytes(), &[0u8; Header::SIZE], MapFlags::ANY)
            .map_err(bpf("clearing a policy header"))?;
        for k in &keys.exe {
            delete_if_present(&maps.policy_exe, k, "an old subject key")?;
        }
        for k in &keys.cgroup {
            delete_if_present(&maps.policy_cgroup, k, "an old subject key")?;
        }
        for k in &keys.uid {
            delete_if_present(&maps.policy_uid, k, "an old subject key")?;
        }
        // Forgotten only once gone: after a failure the next clear tries them again.
        self.slots[slot as usize] = SlotKeys::default();
        Ok(())
    }

    fn fill_slot(&mut self, slot: u32, t: &KernelTables) -> Result<(), GateError> {
        let maps = &self.skel.maps;
        let mut keys = SlotKeys::default();
        // Array indexes: the slot's table, then the entry (the limits were checked, so these fit in u32).
        let index = |max: usize, i: usize| (slot as usize * max + i) as u32;
        for (id, rule) in t.rules.iter().enumerate() {
            let bytes = rule.to_le_bytes();
            maps.policy_rules
                .update(&index(MAX_RULES, id).to_ne_bytes(), &bytes, MapFlags::ANY)
                .map_err(bpf("writing a rule"))?;
        }
        for (i, p) in t.targets.iter().enumerate() {
            let bytes = p.target_record().to_le_bytes();
            maps.policy_targets
                .update(&index(MAX_TARGET_PATTERNS, i).to_ne_bytes(), &bytes, MapFlags::ANY)
                .map_err(bpf("writing an attach-target pattern"))?;
        }
        for (i, p) in t.map_names.iter().enumerate() {
            let bytes = p.map_record().to_le_bytes();
            maps.policy_map_names
                .update(&index(MAX_MAP_PATTERNS, i).to_ne_bytes(), &bytes, MapFlags::ANY)
                .map_err(bpf("writing a map-name pattern"))?;
        }
        for (key, rules) in &t.exe {
            let k = PolicyExeKey { slot, reserved: 0, dev: key.dev, ino: key.ino }.to_ne_bytes();
            maps.policy_exe.update(&k, &rules.to_ne_bytes(), MapFlags::ANY).map_err(bpf("writing an exe key"))?;
            keys.exe.push(k);
        }
        for (&id, rules) in &t.cgroup {
            let k = PolicyCgroupKey { slot: u64::from(slot), id }.to_ne_bytes();
            maps.policy_cgroup.update(&k, &rules.to_ne_bytes(), MapFlags::ANY).map_err(bpf("writing a cgroup key"))?;
            keys.cgroup.push(k);
        }
        for (&uid, rules) in &t.uid {
            let k = PolicyUidKey { slot, uid }.to_ne_bytes();
            maps.policy_uid.update(&k, &rules.to_ne_bytes(), MapFlags::ANY).map_err(bpf("writing a uid key"))?;
            keys.uid.push(k);
        }
        // Keys are recorded before the header so a failure below still lets the next install clean up.
        self.slots[slot as usize] = keys;
        self.skel
            .maps
            .policy_header
            .update(&slot.to_ne_bytes(), &t.header.to_le_bytes(), MapFlags::ANY)
            .map_err(bpf("writing the policy header"))?;
        Ok(())
    }

    fn switch_to(&mut self, slot: u32) -> Result<(), GateError> {
        let bss = self.skel.maps.bss_data.as_deref_mut().ok_or(GateError::NoBss)?;
        // SAFETY: the field lives in the .bss mapping the skeleton keeps for its whole life; a volatile
        // aligned 4-byte store is seen whole by the program's single read of it.
        unsafe { std::ptr::write_volatile(&mut bss.gate_active_slot, slot) };
        // A map-in-map update returns only after synchronize_rcu(): decisions that read the old slot are over.
        self.skel
            .maps
            .sync_rcu
            .update(&0u32.to_ne_bytes(), &self.sync_inner_fd().to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("waiting for decisions on the old policy (sync_rcu update)"))?;
        Ok(())
    }

    fn sync_inner_fd(&self) -> i32 {
        use std::os::fd::{AsFd, AsRawFd};
        self.sync_inner.as_fd().as_raw_fd()
    }

    /// The generation of the policy in force, if any.
    pub fn generation(&self) -> Option<u64> {
        self.active.map(|_| self.next_generation - 1)
    }

    /// Decisions and denials counted by the program since it was loaded.
    pub fn counters(&self) -> (u64, u64) {
        match self.skel.maps.bss_data.as_deref() {
            // SAFETY: fields of the live .bss mapping, written by the program concurrently: read volatile.
            Some(bss) => unsafe {
                (std::ptr::read_volatile(&bss.gate_decisions), std::ptr::read_volatile(&bss.gate_denials))
            },
            None => (0, 0),
        }
    }

    /// Loads the gate holds a record of while it decides them (its count of `pending_loads` records, which an
    /// fd by id skips looking in while it is 0): 0 when no load is in flight. Never below the records.
    pub fn loads_in_flight(&self) -> i64 {
        match self.skel.maps.bss_data.as_deref() {
            // SAFETY: a field of the live .bss mapping, written by the program concurrently: read volatile.
            Some(bss) => unsafe { std::ptr::read_volatile(&bss.pending_records) },
            None => 0,
        }
    }

    /// Events lost because the ring buffer was full, summed over CPUs.
    pub fn dropped(&self) -> Result<u64, GateError> {
        let per_cpu = self
            .skel
            .maps
            .dropped
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("reading the dropped-events counter"))?
            .unwrap_or_default();
        Ok(per_cpu.iter().filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes)).sum())
    }

    /// A consumer of the decision ring buffer, independent of `self`'s borrow so policies can be installed
    /// while events flow.
    pub fn events(&self) -> Result<EventStream, GateError> {
        let map = MapHandle::try_from(&self.skel.maps.events).map_err(bpf("duplicating the events map fd"))?;
        let queue: Rc<RefCell<VecDeque<RawEvent>>> = Rc::default();
        let sink = Rc::clone(&queue);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&map, move |bytes: &[u8]| {
                // A short record cannot come from this program; skipping it keeps the stream going.
                if let Ok(e) = crate::event::parse(bytes) {
                    sink.borrow_mut().push_back(e);
                }
                0
            })
            .map_err(bpf("adding the events ring buffer"))?;
        let rb = builder.build().map_err(bpf("building the ring buffer consumer"))?;
        Ok(EventStream { rb, queue, _map: map })
    }
}

/// Removes a persisted gate: its pins under `dir`, then `dir`. Removing a link's pin detaches it (nothing
/// else holds it once its daemon is gone), but the kernel releases a link from a workqueue after its last
/// reference goes: this returns only once the programs the links held are gone, so no load after it is
/// decided by the gate. Returns the pins removed; none when nothing was persisted there.
pub fn unpin(dir: &Path) -> Result<Vec<PathBuf>, GateError> {
    let pins_error = |what, path: &Path| {
        let path = path.display().to_string();
        move |error| GateError::Pins { what, path, error }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(pins_error("cannot read", dir)(e)),
    };
    let mut removed = Vec::new();
    let mut progs = Vec::new();
    for entry in entries {
        let path = entry.map_err(pins_error("cannot read", dir))?.path();
        if let Some(id) = linked_prog(&path) {
            progs.push(id);
        }
        std::fs::remove_file(&path).map_err(pins_error("cannot remove", &path))?;
        removed.push(path);
    }
    std::fs::remove_dir(dir).map_err(pins_error("cannot remove", dir))?;
    removed.sort();
    wait_gone(&progs, UNPIN_TIMEOUT)?;
    Ok(removed)
}

/// How long [`unpin`] waits for the kernel to release the links; the release is a queued work item, done in
/// microseconds unless the machine is starved.
const UNPIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The id of the program a pinned link holds; `None` for a pin that is no link (the maps).
fn linked_prog(pin: &Path) -> Option<u32> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    let path = CString::new(pin.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is NUL-terminated; a negative return is an error, anything else an fd we own.
    let fd = unsafe { libbpf_sys::bpf_obj_get(path.as_ptr()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned to us and is closed once, here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = size_of_val(&info) as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large. A map fd fails (EINVAL).
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
    (rc == 0 && info.prog_id != 0).then_some(info.prog_id)
}

/// Whether a program with this id exists: ids are listed in order, so the next after `id - 1` is `id`.
fn prog_exists(id: u32) -> bool {
    let mut next = 0;
    // SAFETY: `next` is a valid out pointer.
    let rc = unsafe { libbpf_sys::bpf_prog_get_next_id(id - 1, &mut next) };
    rc == 0 && next == id
}

/// Waits until none of `progs` exists: a link's release detaches its program before dropping the reference
/// that frees it (and its id).
fn wait_gone(progs: &[u32], timeout: Duration) -> Result<(), GateError> {
    let start = std::time::Instant::now();
    while let Some(&id) = progs.iter().find(|&&id| prog_exists(id)) {
        if start.elapsed() > timeout {
            return Err(GateError::StillAttached { prog_id: id, waited: timeout });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A `gate_objects` key.
fn object_key(kind: u32, id: u32) -> [u8; ObjectKey::SIZE] {
    ObjectKey { kind, id }.to_ne_bytes()
}

/// The kernel id of a map, program or link fd: `id` is the second u32 of all three info structs.
pub fn object_id(fd: std::os::fd::RawFd) -> Result<u32, GateError> {
    let mut info = [0u64; 32];
    let mut len = size_of_val(&info) as u32;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large and 8-byte aligned.
    let rc = unsafe { libbpf_sys::bpf_obj_get_info_by_fd(fd, info.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(GateError::Bpf {
            what: "reading the id of a BPF object".into(),
            error: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(-rc)),
        });
    }
    Ok((info[0] >> 32) as u32)
}

/// Deletes `key` from `map` unless it is gone already; `what` names the entry in an error.
fn delete_if_present(map: &dyn MapCore, key: &[u8], what: &str) -> Result<(), GateError> {
    match map.delete(key) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GateError::Bpf { what: format!("removing {what}"), error: e }),
    }
}

fn check_limits(t: &KernelTables) -> Result<(), GateError> {
    let limits = [
        ("rules", t.rules.len(), MAX_RULES),
        ("attach-target patterns", t.targets.len(), MAX_TARGET_PATTERNS),
        ("map-name patterns", t.map_names.len(), MAX_MAP_PATTERNS),
        ("executable keys", t.exe.len(), MAX_SUBJECT_KEYS),
        ("cgroup keys", t.cgroup.len(), MAX_SUBJECT_KEYS),
        ("uid keys", t.uid.len(), MAX_SUBJECT_KEYS),
    ];
    for (what, count, max) in limits {
        if count > max {
            return Err(GateError::Limit { what, count, max });
        }
    }
    Ok(())
}

/// Decisions as they arrive.
pub struct EventStream {
    // Dropped before the map handle it reads.
    rb: RingBuffer<'static>,
    queue: Rc<RefCell<VecDeque<RawEvent>>>,
    _map: MapHandle,
}

impl EventStream {
    /// Waits up to `timeout` for events and returns those that arrived (possibly none). Interrupted waits
    /// (a signal) return what is there.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<RawEvent>, GateError> {
        match self.rb.poll(timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => return Err(GateError::Bpf { what: "polling the ring buffer".into(), error: e }),
        }
        Ok(self.queue.borrow_mut().drain(..).collect())
    }

    /// Takes the events already in the buffer without waiting.
    pub fn drain(&mut self) -> Result<Vec<RawEvent>, GateError> {
        self.rb.consume().map_err(bpf("consuming the ring buffer"))?;
        Ok(self.queue.borrow_mut().drain(..).collect())
    }
}
