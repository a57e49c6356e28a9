//! Program type, expected attach type, attach target and sleepability from an ELF section name.
//!
//! The rules are libbpf's (`section_defs[]` in `src/libbpf.c`, checked against libbpf master of 2026, which is
//! v1.7 plus the `fentry.multi` family), applied in four tiers; the first tier that matches decides:
//!
//! 1. **libbpf.** The current table, in libbpf's order, with libbpf's matching rules: a pattern ending in `+`
//!    matches the bare name or the name followed by `/` and anything (the part after `/` is the attach target);
//!    a pattern ending in `/` matches any name starting with it; any other pattern matches only exactly. A leading
//!    `?` (libbpf's "do not autoload" marker) is ignored, as libbpf does.
//! 2. **Legacy names.** Objects built for libbpf 0.x, cilium/ebpf or iproute2 still carry names libbpf 1.x no
//!    longer accepts, and their loaders still load them. For the patterns libbpf 0.x matched by bare prefix
//!    (`SEC_SLOPPY_PFX`: `socket`, `xdp`, `classifier`, `action`, `cgroup/...`, `sk_skb`, ...) any name starting
//!    with the pattern matches, so `socket1` is a socket filter and `xdp_prog` an XDP program. For the other
//!    exact patterns (`tc`, `syscall`, `netfilter`, `tcx/ingress`, ...) the pattern followed by `/` and anything
//!    matches, so `tc/tail_foo` is a `sched_cls` program (a tail call target of a tc program must be `sched_cls`).
//!    The old `xdp_devmap/` and `xdp_cpumap/` patterns are checked first. Patterns ending in `+` get no legacy
//!    treatment: libbpf 0.x matched them exactly as today. A legacy match has no attach target.
//! 3. **iproute2.** `tc` and `ip` load every program of an object as the program type named on their command line,
//!    so the name says nothing: tail-call sections `ID/KEY` (two integers, as iproute2's `__section_tail` makes
//!    them, e.g. `2/1`) and iproute2's default section `prog` (`ip link ... xdp`, `ip route ... lwt`) give
//!    [`ProgType::Unspec`] with a reason saying the loader decides.
//! 4. Everything else is [`ProgType::Unspec`] with a reason naming the section; `.text` gets its own reason
//!    (it holds subprograms, never a program entry, in libbpf).
//!
//! Attach types: the expected attach type of the libbpf table, or `None` where libbpf's table has 0 and so passes
//! no expected attach type: `socket`, all kprobe/uprobe/ksyscall/usdt/tracepoint/raw_tracepoint entries (but the
//! `.multi` and `.session` ones), `tc`, `classifier`, `action`, `freplace`, `struct_ops` (libbpf sets the struct
//! member index at load time), `syscall`, `perf_event`, `lwt_*`, `sk_skb`, `cgroup/skb`. `usdt` stays `None` though
//! libbpf switches it to `trace_uprobe_multi` on kernels with uprobe-multi links: that depends on the kernel.

use crate::progtype::{AttachType, ProgType};

/// What a section name says about the programs in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub prog_type: ProgType,
    /// The expected attach type libbpf would pass at load time, if any.
    pub attach_type: Option<AttachType>,
    /// The part after the first `/` for libbpf's `+` patterns (`do_sys_open` for `kprobe/do_sys_open`,
    /// `syscalls/sys_enter_openat` for `tracepoint/syscalls/sys_enter_openat`, the `binary:function` spec for
    /// uprobes, the glob for `kprobe.multi`, the struct_ops map name for `struct_ops/NAME`).
    pub attach_target: Option<String>,
    /// libbpf loads the program with `BPF_F_SLEEPABLE`.
    pub sleepable: bool,
    /// Why `prog_type` is [`ProgType::Unspec`], when it is.
    pub unspec_reason: Option<String>,
}

/// How a pattern may match names libbpf 1.x rejects (tier 2 of the module rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legacy {
    /// `+` pattern: matched the same way by every libbpf version.
    No,
    /// libbpf 0.x `SEC_SLOPPY_PFX`: any name starting with the pattern.
    Prefix,
    /// Exact pattern that was never sloppy: the pattern followed by `/` and anything.
    Slash,
}

struct SecDef {
    pattern: &'static str,
    prog_type: ProgType,
    attach_type: Option<AttachType>,
    sleepable: bool,
    legacy: Legacy,
}

const fn def(
    pattern: &'static str,
    prog_type: ProgType,
    attach_type: Option<AttachType>,
    sleepable: bool,
    legacy: Legacy,
) -> SecDef {
    SecDef { pattern, prog_type, attach_type, sleepable, legacy }
}

use AttachType as A;
use Legacy::{No, Prefix, Slash};
use ProgType as P;

/// libbpf's `section_defs[]`, same order (order decides between overlapping patterns).
#[rustfmt::skip]
const SEC_DEFS: &[SecDef] = &[
    def("socket",                  P::SocketFilter, None, false, Prefix),
    def("sk_reuseport/migrate",    P::SkReuseport, Some(A::SkReuseportSelectOrMigrate), false, Prefix),
    def("sk_reuseport",            P::SkReuseport, Some(A::SkReuseportSelect), false, Prefix),
    def("kprobe+",                 P::Kprobe, None, false, No),
    def("uprobe+",                 P::Kprobe, None, false, No),
    def("uprobe.s+",               P::Kprobe, None, true, No),
    def("kretprobe+",              P::Kprobe, None, false, No),
    def("uretprobe+",              P::Kprobe, None, false, No),
    def("uretprobe.s+",            P::Kprobe, None, true, No),
    def("kprobe.multi+",           P::Kprobe, Some(A::TraceKprobeMulti), false, No),
    def("kretprobe.multi+",        P::Kprobe, Some(A::TraceKprobeMulti), false, No),
    def("kprobe.session+",         P::Kprobe, Some(A::TraceKprobeSession), false, No),
    def("uprobe.multi+",           P::Kprobe, Some(A::TraceUprobeMulti), false, No),
    def("uretprobe.multi+",        P::Kprobe, Some(A::TraceUprobeMulti), false, No),
    def("uprobe.session+",         P::Kprobe, Some(A::TraceUprobeSession), false, No),
    def("uprobe.multi.s+",         P::Kprobe, Some(A::TraceUprobeMulti), true, No),
    def("uretprobe.multi.s+",      P::Kprobe, Some(A::TraceUprobeMulti), true, No),
    def("uprobe.session.s+",       P::Kprobe, Some(A::TraceUprobeSession), true, No),
    def("ksyscall+",               P::Kprobe, None, false, No),
    def("kretsyscall+",            P::Kprobe, None, false, No),
    def("usdt+",                   P::Kprobe, None, false, No),
    def("usdt.s+",                 P::Kprobe, None, true, No),
    def("tc/ingress",              P::SchedCls, Some(A::TcxIngress), false, Slash),
    def("tc/egress",               P::SchedCls, Some(A::TcxEgress), false, Slash),
    def("tcx/ingress",             P::SchedCls, Some(A::TcxIngress), false, Slash),
    def("tcx/egress",              P::SchedCls, Some(A::TcxEgress), false, Slash),
    def("tc",                      P::SchedCls, None, false, Slash),
    def("classifier",              P::SchedCls, None, false, Prefix),
    def("action",                  P::SchedAct, None, false, Prefix),
    def("netkit/primary",          P::SchedCls, Some(A::NetkitPrimary), false, Slash),
    def("netkit/peer",             P::SchedCls, Some(A::NetkitPeer), false, Slash),
    def("tracepoint+",             P::Tracepoint, None, false, No),
    def("tp+",                     P::Tracepoint, None, false, No),
    def("tracepoint.s+",           P::Tracepoint, None, true, No),
    def("tp.s+",                   P::Tracepoint, None, true, No),
    def("raw_tracepoint+",         P::RawTracepoint, None, false, No),
    def("raw_tp+",                 P::RawTracepoint, None, false, No),
    def("raw_tracepoint.s+",       P::RawTracepoint, None, true, No),
    def("raw_tp.s+",               P::RawTracepoint, None, true, No),
    def("raw_tracepoint.w+",       P::RawTracepointWritable, None, false, No),
    def("raw_tp.w+",               P::RawTracepointWritable, None, false, No),
    def("tp_btf+",                 P::Tracing, Some(A::TraceRawTp), false, No),
    def("tp_btf.s+",               P::Tracing, Some(A::TraceRawTp), true, No),
    def("fentry+",                 P::Tracing, Some(A::TraceFentry), false, No),
    def("fmod_ret+",               P::Tracing, Some(A::ModifyReturn), false, No),
    def("fexit+",                  P::Tracing, Some(A::TraceFexit), false, No),
    def("fentry.s+",               P::Tracing, Some(A::TraceFentry), true, No),
    def("fmod_ret.s+",             P::Tracing, Some(A::ModifyReturn), true, No),
    def("fexit.s+",                P::Tracing, Some(A::TraceFexit), true, No),
    def("fsession+",               P::Tracing, Some(A::TraceFsession), false, No),
    def("fsession.s+",             P::Tracing, Some(A::TraceFsession), true, No),
    def("fsession.multi+",         P::Tracing, Some(A::TraceFsessionMulti), false, No),
    def("fsession.multi.s+",       P::Tracing, Some(A::TraceFsessionMulti), true, No),
    def("fentry.multi+",           P::Tracing, Some(A::TraceFentryMulti), false, No),
    def("fexit.multi+",            P::Tracing, Some(A::TraceFexitMulti), false, No),
    def("fentry.multi.s+",         P::Tracing, Some(A::TraceFentryMulti), true, No),
    def("fexit.multi.s+",          P::Tracing, Some(A::TraceFexitMulti), true, No),
    def("freplace+",               P::Ext, None, false, No),
    def("lsm+",                    P::Lsm, Some(A::LsmMac), false, No),
    def("lsm.s+",                  P::Lsm, Some(A::LsmMac), true, No),
    def("lsm_cgroup+",             P::Lsm, Some(A::LsmCgroup), false, No),
    def("iter+",                   P::Tracing, Some(A::TraceIter), false, No),
    def("iter.s+",                 P::Tracing, Some(A::TraceIter), true, No),
    def("syscall",                 P::Syscall, None, true, Slash),
    def("xdp.frags/devmap",        P::Xdp, Some(A::XdpDevmap), false, Slash),
    def("xdp/devmap",              P::Xdp, Some(A::XdpDevmap), false, Slash),
    def("xdp.frags/cpumap",        P::Xdp, Some(A::XdpCpumap), false, Slash),
    def("xdp/cpumap",              P::Xdp, Some(A::XdpCpumap), false, Slash),
    def("xdp.frags",               P::Xdp, Some(A::Xdp), false, Slash),
    def("xdp",                     P::Xdp, Some(A::Xdp), false, Prefix),
    def("perf_event",              P::PerfEvent, None, false, Prefix),
    def("lwt_in",                  P::LwtIn, None, false, Prefix),
    def("lwt_out",                 P::LwtOut, None, false, Prefix),
    def("lwt_xmit",                P::LwtXmit, None, false, Prefix),
    def("lwt_seg6local",           P::LwtSeg6local, None, false, Prefix),
    def("sockops",                 P::SockOps, Some(A::CgroupSockOps), false, Prefix),
    def("sk_skb/stream_parser",    P::SkSkb, Some(A::SkSkbStreamParser), false, Prefix),
    def("sk_skb/stream_verdict",   P::SkSkb, Some(A::SkSkbStreamVerdict), false, Prefix),
    def("sk_skb/verdict",          P::SkSkb, Some(A::SkSkbVerdict), false, Slash),
    def("sk_skb",                  P::SkSkb, None, false, Prefix),
    def("sk_msg",                  P::SkMsg, Some(A::SkMsgVerdict), false, Prefix),
    def("lirc_mode2",              P::LircMode2, Some(A::LircMode2), false, Prefix),
    def("flow_dissector",          P::FlowDissector, Some(A::FlowDissector), false, Prefix),
    def("cgroup_skb/ingress",      P::CgroupSkb, Some(A::CgroupInetIngress), false, Prefix),
    def("cgroup_skb/egress",       P::CgroupSkb, Some(A::CgroupInetEgress), false, Prefix),
    def("cgroup/skb",              P::CgroupSkb, None, false, Prefix),
    def("cgroup/sock_create",      P::CgroupSock, Some(A::CgroupInetSockCreate), false, Prefix),
    def("cgroup/sock_release",     P::CgroupSock, Some(A::CgroupInetSockRelease), false, Prefix),
    def("cgroup/sock",             P::CgroupSock, Some(A::CgroupInetSockCreate), false, Prefix),
    def("cgroup/post_bind4",       P::CgroupSock, Some(A::CgroupInet4PostBind), false, Prefix),
    def("cgroup/post_bind6",       P::CgroupSock, Some(A::CgroupInet6PostBind), false, Prefix),
    def("cgroup/bind4",            P::CgroupSockAddr, Some(A::CgroupInet4Bind), false, Prefix),
    def("cgroup/bind6",            P::CgroupSockAddr, Some(A::CgroupInet6Bind), false, Prefix),
    def("cgroup/connect4",         P::CgroupSockAddr, Some(A::CgroupInet4Connect), false, Prefix),
    def("cgroup/connect6",         P::CgroupSockAddr, Some(A::CgroupInet6Connect), false, Prefix),
    def("cgroup/connect_unix",     P::CgroupSockAddr, Some(A::CgroupUnixConnect), false, Slash),
    def("cgroup/sendmsg4",         P::CgroupSockAddr, Some(A::CgroupUdp4Sendmsg), false, Prefix),
    def("cgroup/sendmsg6",         P::CgroupSockAddr, Some(A::CgroupUdp6Sendmsg), false, Prefix),
    def("cgroup/sendmsg_unix",     P::CgroupSockAddr, Some(A::CgroupUnixSendmsg), false, Slash),
    def("cgroup/recvmsg4",         P::CgroupSockAddr, Some(A::CgroupUdp4Recvmsg), false, Prefix),
    def("cgroup/recvmsg6",         P::CgroupSockAddr, Some(A::CgroupUdp6Recvmsg), false, Prefix),
    def("cgroup/recvmsg_unix",     P::CgroupSockAddr, Some(A::CgroupUnixRecvmsg), false, Slash),
    def("cgroup/getpeername4",     P::CgroupSockAddr, Some(A::CgroupInet4Getpeername), false, Prefix),
    def("cgroup/getpeername6",     P::CgroupSockAddr, Some(A::CgroupInet6Getpeername), false, Prefix),
    def("cgroup/getpeername_unix", P::CgroupSockAddr, Some(A::CgroupUnixGetpeername), false, Slash),
    def("cgroup/getsockname4",     P::CgroupSockAddr, Some(A::CgroupInet4Getsockname), false, Prefix),
    def("cgroup/getsockname6",     P::CgroupSockAddr, Some(A::CgroupInet6Getsockname), false, Prefix),
    def("cgroup/getsockname_unix", P::CgroupSockAddr, Some(A::CgroupUnixGetsockname), false, Slash),
    def("cgroup/sysctl",           P::CgroupSysctl, Some(A::CgroupSysctl), false, Prefix),
    def("cgroup/getsockopt",       P::CgroupSockopt, Some(A::CgroupGetsockopt), false, Prefix),
    def("cgroup/setsockopt",       P::CgroupSockopt, Some(A::CgroupSetsockopt), false, Prefix),
    def("cgroup/dev",              P::CgroupDevice, Some(A::CgroupDevice), false, Prefix),
    def("struct_ops+",             P::StructOps, None, false, No),
    def("struct_ops.s+",           P::StructOps, None, true, No),
    def("sk_lookup",               P::SkLookup, Some(A::SkLookup), false, Prefix),
    def("netfilter",               P::Netfilter, Some(A::Netfilter), false, Slash),
];

/// libbpf 0.x patterns gone from libbpf 1.x; they came before `xdp` in its table, so they are checked first.
#[rustfmt::skip]
const OLD_DEFS: &[SecDef] = &[
    def("xdp_devmap/",             P::Xdp, Some(A::XdpDevmap), false, Prefix),
    def("xdp_cpumap/",             P::Xdp, Some(A::XdpCpumap), false, Prefix),
];

/// iproute2's default section for `ip link ... xdp` and `ip route ... lwt` objects.
const IPROUTE2_DEFAULT_SECTION: &str = "prog";

enum Match {
    Def { def: &'static SecDef, target: Option<String> },
    Iproute2TailCall,
    Iproute2Default,
    Text,
    Unknown,
}

/// Tier 1: libbpf 1.x `sec_def_matches()`. Returns the attach target (text after `/`) for `+` patterns.
fn libbpf_match(pattern: &str, name: &str) -> Option<Option<String>> {
    if pattern.ends_with('/') {
        return name.starts_with(pattern).then_some(None);
    }
    if let Some(base) = pattern.strip_suffix('+') {
        let rest = name.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(None);
        }
        let extra = rest.strip_prefix('/')?;
        return Some((!extra.is_empty()).then(|| extra.to_owned()));
    }
    (name == pattern).then_some(None)
}

/// Tier 2: names libbpf 0.x, cilium/ebpf or iproute2 loaders still accept.
fn legacy_match(def: &SecDef, name: &str) -> bool {
    match def.legacy {
        No => false,
        Prefix => name.starts_with(def.pattern),
        Slash => name.strip_prefix(def.pattern).is_some_and(|rest| rest.starts_with('/')),
    }
}

/// iproute2 parses tail-call section names with `sscanf("%i/%i")`: decimal, `0x` hex or leading-zero octal.
fn is_iproute2_tail_call(name: &str) -> bool {
    fn is_int(s: &str) -> bool {
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
        match hex {
            Some(h) => !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        }
    }
    name.split_once('/').is_some_and(|(id, key)| is_int(id) && is_int(key))
}

fn find(section: &str) -> Match {
    // libbpf: SEC("?name") is SEC("name") with autoload off.
    let name = section.strip_prefix('?').unwrap_or(section);
    // Every rule of tiers 1 and 2 needs the name to start with the pattern's first byte; comparing that byte
    // first skips most of the ~120 patterns cheaply (the table order, which decides, is kept).
    let first = name.as_bytes().first().copied();
    let candidate = |def: &&SecDef| def.pattern.as_bytes().first().copied() == first;
    for def in SEC_DEFS.iter().filter(candidate) {
        if let Some(target) = libbpf_match(def.pattern, name) {
            return Match::Def { def, target };
        }
    }
    for def in OLD_DEFS.iter().chain(SEC_DEFS).filter(candidate) {
        if legacy_match(def, name) {
            return Match::Def { def, target: None };
        }
    }
    if is_iproute2_tail_call(name) {
        Match::Iproute2TailCall
    } else if name == IPROUTE2_DEFAULT_SECTION {
        Match::Iproute2Default
    } else if name == ".text" {
        Match::Text
    } else {
        Match::Unknown
    }
}

fn unspec(reason: String) -> SectionInfo {
    SectionInfo {
        prog_type: ProgType::Unspec,
        attach_type: None,
        attach_target: None,
        sleepable: false,
        unspec_reason: Some(reason),
    }
}

/// Classifies a section by name. Never fails: names no rule knows give [`ProgType::Unspec`] with a reason.
pub fn classify(section: &str) -> SectionInfo {
    match find(section) {
        Match::Def { def, target } => SectionInfo {
            prog_type: def.prog_type,
            attach_type: def.attach_type,
            attach_target: target,
            sleepable: def.sleepable,
            unspec_reason: None,
        },
        Match::Iproute2TailCall => unspec(format!(
            "section `{section}`: iproute2 tail-call section: program type comes from the loader"
        )),
        Match::Iproute2Default => unspec(format!(
            "section `{section}`: iproute2 default section (ip link xdp, ip route lwt): program type comes from the loader"
        )),
        Match::Text => unspec(format!("section `{section}` holds subprograms, not program entries")),
        Match::Unknown => bpftrace(section).unwrap_or_else(|| {
            unspec(format!("section `{section}`: no libbpf, legacy, iproute2 or bpftrace section rule matches"))
        }),
    }
}

/// bpftrace's own naming (`bpftrace --emit-elf`): `s_<probe>_<n>`, e.g. `s_kprobe:do_nanosleep_1` or
/// `s_tracepoint:syscalls:sys_enter_openat_1`. bpftrace loads these itself, so this only labels what a user inspects.
fn bpftrace(section: &str) -> Option<SectionInfo> {
    let probe = section.strip_prefix("s_")?;
    let probe = probe.rsplit_once('_').filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit())).map_or(probe, |p| p.0);
    let (kind, rest) = probe.split_once(':').unwrap_or((probe, ""));
    let target = |t: &str| (!t.is_empty()).then(|| t.replace(':', "/"));
    let (prog_type, attach_type, attach_target) = match kind {
        "kprobe" | "kretprobe" | "uprobe" | "uretprobe" | "usdt" => (ProgType::Kprobe, None, target(rest)),
        "BEGIN" | "END" => (ProgType::Kprobe, None, None),
        "tracepoint" => (ProgType::Tracepoint, None, target(rest)),
        "rawtracepoint" => (ProgType::RawTracepoint, None, target(rest)),
        "profile" | "interval" | "software" | "hardware" => (ProgType::PerfEvent, None, None),
        "kfunc" | "fentry" => (ProgType::Tracing, Some(AttachType::TraceFentry), target(rest)),
        "kretfunc" | "fexit" => (ProgType::Tracing, Some(AttachType::TraceFexit), target(rest)),
        "iter" => (ProgType::Tracing, Some(AttachType::TraceIter), target(rest)),
        _ => return None,
    };
    Some(SectionInfo { prog_type, attach_type, attach_target, sleepable: false, unspec_reason: None })
}

/// Whether a section of this name holds programs for some loader: true for every name [`classify`] gives a
/// program type, and for iproute2 tail-call and default sections (their type comes from the loader); false for
/// `.text` and unknown names. Only about names: the ELF front end decides code-ness by `SHF_EXECINSTR`.
pub fn is_program_section(section: &str) -> bool {
    matches!(find(section), Match::Def { .. } | Match::Iproute2TailCall | Match::Iproute2Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (&'static str, ProgType, Option<AttachType>, Option<&'static str>, bool);

    fn check(rows: &[Row]) {
        for &(name, prog, attach, target, sleepable) in rows {
            let got = classify(name);
            let want = SectionInfo {
                prog_type: prog,
                attach_type: attach,
                attach_target: target.map(str::to_owned),
                sleepable,
                unspec_reason: None,
            };
            assert_eq!(got, want, "section `{name}`");
            assert!(is_program_section(name), "section `{name}`");
        }
    }

    /// Every libbpf entry, bare and (for `+` patterns) with a target.
    #[test]
    fn bpftrace_sections() {
        let k = classify("s_kprobe:do_nanosleep_1");
        assert_eq!((k.prog_type, k.attach_target.as_deref()), (ProgType::Kprobe, Some("do_nanosleep")));
        let t = classify("s_tracepoint:syscalls:sys_enter_openat_2");
        assert_eq!(
            (t.prog_type, t.attach_target.as_deref()),
            (ProgType::Tracepoint, Some("syscalls/sys_enter_openat"))
        );
        let f = classify("s_kfunc:vfs_read_1");
        assert_eq!((f.prog_type, f.attach_type), (ProgType::Tracing, Some(AttachType::TraceFentry)));
        assert_eq!(classify("s_nonsense:x_1").prog_type, ProgType::Unspec);
    }

    #[test]
    #[rustfmt::skip]
    fn libbpf_table() {
        check(&[
            ("socket", P::SocketFilter, None, None, false),
            ("sk_reuseport/migrate", P::SkReuseport, Some(A::SkReuseportSelectOrMigrate), None, false),
            ("sk_reuseport", P::SkReuseport, Some(A::SkReuseportSelect), None, false),
            ("kprobe", P::Kprobe, None, None, false),
            ("kprobe/do_sys_open", P::Kprobe, None, Some("do_sys_open"), false),
            ("kprobe/tcp_v4_connect+0x10", P::Kprobe, None, Some("tcp_v4_connect+0x10"), false),
            ("uprobe//usr/lib/libc.so.6:malloc", P::Kprobe, None, Some("/usr/lib/libc.so.6:malloc"), false),
            ("uprobe.s/bin/bash:readline", P::Kprobe, None, Some("bin/bash:readline"), true),
            ("kretprobe/do_unlinkat", P::Kprobe, None, Some("do_unlinkat"), false),
            ("uretprobe//bin/bash:readline", P::Kprobe, None, Some("/bin/bash:readline"), false),
            ("uretprobe.s", P::Kprobe, None, None, true),
            ("kprobe.multi/tcp_*", P::Kprobe, Some(A::TraceKprobeMulti), Some("tcp_*"), false),
            ("kretprobe.multi/vfs_*", P::Kprobe, Some(A::TraceKprobeMulti), Some("vfs_*"), false),
            ("kprobe.session/foo", P::Kprobe, Some(A::TraceKprobeSession), Some("foo"), false),
            ("uprobe.multi/lib.so:f*", P::Kprobe, Some(A::TraceUprobeMulti), Some("lib.so:f*"), false),
            ("uretprobe.multi", P::Kprobe, Some(A::TraceUprobeMulti), None, false),
            ("uprobe.session/x:y", P::Kprobe, Some(A::TraceUprobeSession), Some("x:y"), false),
            ("uprobe.multi.s/x:y", P::Kprobe, Some(A::TraceUprobeMulti), Some("x:y"), true),
            ("uretprobe.multi.s", P::Kprobe, Some(A::TraceUprobeMulti), None, true),
            ("uprobe.session.s/x:y", P::Kprobe, Some(A::TraceUprobeSession), Some("x:y"), true),
            ("ksyscall/openat", P::Kprobe, None, Some("openat"), false),
            ("kretsyscall/openat", P::Kprobe, None, Some("openat"), false),
            ("usdt/./bin:prov:probe", P::Kprobe, None, Some("./bin:prov:probe"), false),
            ("usdt.s/lib:p:n", P::Kprobe, None, Some("lib:p:n"), true),
            ("tc/ingress", P::SchedCls, Some(A::TcxIngress), None, false),
            ("tc/egress", P::SchedCls, Some(A::TcxEgress), None, false),
            ("tcx/ingress", P::SchedCls, Some(A::TcxIngress), None, false),
            ("tcx/egress", P::SchedCls, Some(A::TcxEgress), None, false),
            ("tc", P::SchedCls, None, None, false),
            ("classifier", P::SchedCls, None, None, false),
            ("action", P::SchedAct, None, None, false),
            ("netkit/primary", P::SchedCls, Some(A::NetkitPrimary), None, false),
            ("netkit/peer", P::SchedCls, Some(A::NetkitPeer), None, false),
            ("tracepoint/syscalls/sys_enter_openat", P::Tracepoint, None, Some("syscalls/sys_enter_openat"), false),
            ("tp/sched/sched_switch", P::Tracepoint, None, Some("sched/sched_switch"), false),
            ("tracepoint.s/syscalls/sys_enter_x", P::Tracepoint, None, Some("syscalls/sys_enter_x"), true),
            ("tp.s/a/b", P::Tracepoint, None, Some("a/b"), true),
            ("raw_tracepoint/sched_switch", P::RawTracepoint, None, Some("sched_switch"), false),
            ("raw_tp/sys_enter", P::RawTracepoint, None, Some("sys_enter"), false),
            ("raw_tracepoint.s/x", P::RawTracepoint, None, Some("x"), true),
            ("raw_tp.s", P::RawTracepoint, None, None, true),
            ("raw_tracepoint.w/bpf_test_finish", P::RawTracepointWritable, None, Some("bpf_test_finish"), false),
            ("raw_tp.w/x", P::RawTracepointWritable, None, Some("x"), false),
            ("tp_btf/sched_switch", P::Tracing, Some(A::TraceRawTp), Some("sched_switch"), false),
            ("tp_btf.s/x", P::Tracing, Some(A::TraceRawTp), Some("x"), true),
            ("fentry/tcp_v4_connect", P::Tracing, Some(A::TraceFentry), Some("tcp_v4_connect"), false),
            ("fmod_ret/security_x", P::Tracing, Some(A::ModifyReturn), Some("security_x"), false),
            ("fexit/do_exit", P::Tracing, Some(A::TraceFexit), Some("do_exit"), false),
            ("fentry.s/x", P::Tracing, Some(A::TraceFentry), Some("x"), true),
            ("fmod_ret.s/x", P::Tracing, Some(A::ModifyReturn), Some("x"), true),
            ("fexit.s/x", P::Tracing, Some(A::TraceFexit), Some("x"), true),
            ("fsession/x", P::Tracing, Some(A::TraceFsession), Some("x"), false),
            ("fsession.s/x", P::Tracing, Some(A::TraceFsession), Some("x"), true),
            ("fsession.multi/x*", P::Tracing, Some(A::TraceFsessionMulti), Some("x*"), false),
            ("fsession.multi.s/x*", P::Tracing, Some(A::TraceFsessionMulti), Some("x*"), true),
            ("fentry.multi/x*", P::Tracing, Some(A::TraceFentryMulti), Some("x*"), false),
            ("fexit.multi/x*", P::Tracing, Some(A::TraceFexitMulti), Some("x*"), false),
            ("fentry.multi.s/x*", P::Tracing, Some(A::TraceFentryMulti), Some("x*"), true),
            ("fexit.multi.s/x*", P::Tracing, Some(A::TraceFexitMulti), Some("x*"), true),
            ("freplace/get_constant", P::Ext, None, Some("get_constant"), false),
            ("lsm/bpf_prog_load", P::Lsm, Some(A::LsmMac), Some("bpf_prog_load"), false),
            ("lsm.s/file_open", P::Lsm, Some(A::LsmMac), Some("file_open"), true),
            ("lsm_cgroup/socket_bind", P::Lsm, Some(A::LsmCgroup), Some("socket_bind"), false),
            ("iter/task", P::Tracing, Some(A::TraceIter), Some("task"), false),
            ("iter.s/task_file", P::Tracing, Some(A::TraceIter), Some("task_file"), true),
            ("syscall", P::Syscall, None, None, true),
            ("xdp.frags/devmap", P::Xdp, Some(A::XdpDevmap), None, false),
            ("xdp/devmap", P::Xdp, Some(A::XdpDevmap), None, false),
            ("xdp.frags/cpumap", P::Xdp, Some(A::XdpCpumap), None, false),
            ("xdp/cpumap", P::Xdp, Some(A::XdpCpumap), None, false),
            ("xdp.frags", P::Xdp, Some(A::Xdp), None, false),
            ("xdp", P::Xdp, Some(A::Xdp), None, false),
            ("perf_event", P::PerfEvent, None, None, false),
            ("lwt_in", P::LwtIn, None, None, false),
            ("lwt_out", P::LwtOut, None, None, false),
            ("lwt_xmit", P::LwtXmit, None, None, false),
            ("lwt_seg6local", P::LwtSeg6local, None, None, false),
            ("sockops", P::SockOps, Some(A::CgroupSockOps), None, false),
            ("sk_skb/stream_parser", P::SkSkb, Some(A::SkSkbStreamParser), None, false),
            ("sk_skb/stream_verdict", P::SkSkb, Some(A::SkSkbStreamVerdict), None, false),
            ("sk_skb/verdict", P::SkSkb, Some(A::SkSkbVerdict), None, false),
            ("sk_skb", P::SkSkb, None, None, false),
            ("sk_msg", P::SkMsg, Some(A::SkMsgVerdict), None, false),
            ("lirc_mode2", P::LircMode2, Some(A::LircMode2), None, false),
            ("flow_dissector", P::FlowDissector, Some(A::FlowDissector), None, false),
            ("cgroup_skb/ingress", P::CgroupSkb, Some(A::CgroupInetIngress), None, false),
            ("cgroup_skb/egress", P::CgroupSkb, Some(A::CgroupInetEgress), None, false),
            ("cgroup/skb", P::CgroupSkb, None, None, false),
            ("cgroup/sock_create", P::CgroupSock, Some(A::CgroupInetSockCreate), None, false),
            ("cgroup/sock_release", P::CgroupSock, Some(A::CgroupInetSockRelease), None, false),
            ("cgroup/sock", P::CgroupSock, Some(A::CgroupInetSockCreate), None, false),
            ("cgroup/post_bind4", P::CgroupSock, Some(A::CgroupInet4PostBind), None, false),
            ("cgroup/post_bind6", P::CgroupSock, Some(A::CgroupInet6PostBind), None, false),
            ("cgroup/bind4", P::CgroupSockAddr, Some(A::CgroupInet4Bind), None, false),
            ("cgroup/bind6", P::CgroupSockAddr, Some(A::CgroupInet6Bind), None, false),
            ("cgroup/connect4", P::CgroupSockAddr, Some(A::CgroupInet4Connect), None, false),
            ("cgroup/connect6", P::CgroupSockAddr, Some(A::CgroupInet6Connect), None, false),
            ("cgroup/connect_unix", P::CgroupSockAddr, Some(A::CgroupUnixConnect), None, false),
            ("cgroup/sendmsg4", P::CgroupSockAddr, Some(A::CgroupUdp4Sendmsg), None, false),
            ("cgroup/sendmsg6", P::CgroupSockAddr, Some(A::CgroupUdp6Sendmsg), None, false),
            ("cgroup/sendmsg_unix", P::CgroupSockAddr, Some(A::CgroupUnixSendmsg), None, false),
            ("cgroup/recvmsg4", P::CgroupSockAddr, Some(A::CgroupUdp4Recvmsg), None, false),
            ("cgroup/recvmsg6", P::CgroupSockAddr, Some(A::CgroupUdp6Recvmsg), None, false),
            ("cgroup/recvmsg_unix", P::CgroupSockAddr, Some(A::CgroupUnixRecvmsg), None, false),
            ("cgroup/getpeername4", P::CgroupSockAddr, Some(A::CgroupInet4Getpeername), None, false),
            ("cgroup/getpeername6", P::CgroupSockAddr, Some(A::CgroupInet6Getpeername), None, false),
            ("cgroup/getpeername_unix", P::CgroupSockAddr, Some(A::CgroupUnixGetpeername), None, false),
            ("cgroup/getsockname4", P::CgroupSockAddr, Some(A::CgroupInet4Getsockname), None, false),
            ("cgroup/getsockname6", P::CgroupSockAddr, Some(A::CgroupInet6Getsockname), None, false),
            ("cgroup/getsockname_unix", P::CgroupSockAddr, Some(A::CgroupUnixGetsockname), None, false),
            ("cgroup/sysctl", P::CgroupSysctl, Some(A::CgroupSysctl), None, false),
            ("cgroup/getsockopt", P::CgroupSockopt, Some(A::CgroupGetsockopt), None, false),
            ("cgroup/setsockopt", P::CgroupSockopt, Some(A::CgroupSetsockopt), None, false),
            ("cgroup/dev", P::CgroupDevice, Some(A::CgroupDevice), None, false),
            ("struct_ops", P::StructOps, None, None, false),
            ("struct_ops/my_ops", P::StructOps, None, Some("my_ops"), false),
            ("struct_ops.s/init", P::StructOps, None, Some("init"), true),
            ("sk_lookup", P::SkLookup, Some(A::SkLookup), None, false),
            ("netfilter", P::Netfilter, Some(A::Netfilter), None, false),
        ]);
    }

    /// Every libbpf pattern is reachable: classifying its bare form picks that very entry.
    #[test]
    fn every_pattern_reachable() {
        for def in SEC_DEFS {
            let bare = def.pattern.trim_end_matches('+');
            match find(bare) {
                Match::Def { def: got, .. } => assert_eq!(got.pattern, def.pattern, "section `{bare}`"),
                _ => panic!("section `{bare}` not matched"),
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn legacy_names() {
        check(&[
            ("socket1", P::SocketFilter, None, None, false),
            ("socket/http", P::SocketFilter, None, None, false),
            ("classifier/ingress", P::SchedCls, None, None, false),
            ("classifier_foo", P::SchedCls, None, None, false),
            ("action/police", P::SchedAct, None, None, false),
            ("tc/tail_foo", P::SchedCls, None, None, false),
            ("xdp/foo", P::Xdp, Some(A::Xdp), None, false),
            ("xdp_prog", P::Xdp, Some(A::Xdp), None, false),
            ("xdp_devmap/foo", P::Xdp, Some(A::XdpDevmap), None, false),
            ("xdp_cpumap/foo", P::Xdp, Some(A::XdpCpumap), None, false),
            ("xdp.frags/foo", P::Xdp, Some(A::Xdp), None, false),
            ("cgroup/skb1", P::CgroupSkb, None, None, false),
            ("cgroup/sock_create/x", P::CgroupSock, Some(A::CgroupInetSockCreate), None, false),
            ("cgroup/connect4/x", P::CgroupSockAddr, Some(A::CgroupInet4Connect), None, false),
            ("cgroup/connect_unix/x", P::CgroupSockAddr, Some(A::CgroupUnixConnect), None, false),
            ("sk_skb/other", P::SkSkb, None, None, false),
            ("perf_event/cpu", P::PerfEvent, None, None, false),
            ("sockops/rtt", P::SockOps, Some(A::CgroupSockOps), None, false),
            ("syscall/foo", P::Syscall, None, None, true),
            ("netfilter/x", P::Netfilter, Some(A::Netfilter), None, false),
            ("sk_lookup/dispatch", P::SkLookup, Some(A::SkLookup), None, false),
            // libbpf's "?" (no autoload) prefix.
            ("?kprobe/do_sys_open", P::Kprobe, None, Some("do_sys_open"), false),
            ("?xdp", P::Xdp, Some(A::Xdp), None, false),
        ]);
    }

    #[test]
    fn unspec_names() {
        for (name, reason_part, program) in [
            ("2/1", "iproute2 tail-call section: program type comes from the loader", true),
            ("1/0", "iproute2 tail-call section", true),
            ("0x10/0x2", "iproute2 tail-call section", true),
            ("prog", "iproute2 default section", true),
            (".text", "subprograms", false),
            ("", "no libbpf", false),
            ("foo", "no libbpf", false),
            ("kprobe_foo", "no libbpf", false), // `+` patterns need `/` after the prefix
            ("kprobe.multi_x", "no libbpf", false),
            ("tcp_connect", "no libbpf", false), // `tc` was never a bare-prefix pattern
            ("syscalls", "no libbpf", false),
            ("tcx/other", "no libbpf", false),
            ("1/x", "no libbpf", false),
            ("/1", "no libbpf", false),
            ("0x/1", "no libbpf", false),
            (".maps", "no libbpf", false),
            ("license", "no libbpf", false),
            ("?", "no libbpf", false),
        ] {
            let got = classify(name);
            assert_eq!(got.prog_type, ProgType::Unspec, "section `{name}`");
            assert_eq!(got.attach_type, None);
            assert_eq!(got.attach_target, None);
            assert!(!got.sleepable);
            let reason = got.unspec_reason.unwrap_or_default();
            assert!(reason.contains(reason_part), "section `{name}`: {reason}");
            assert!(reason.contains(&format!("`{name}`")), "reason names the section: {reason}");
            assert_eq!(is_program_section(name), program, "section `{name}`");
        }
    }

    #[test]
    fn empty_target_is_none() {
        assert_eq!(classify("kprobe/").attach_target, None);
        assert_eq!(classify("kprobe/").prog_type, ProgType::Kprobe);
    }
}
