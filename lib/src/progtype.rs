//! Kernel program, attach and map types (`enum bpf_prog_type`, `enum bpf_attach_type`, `enum bpf_map_type` in
//! `include/uapi/linux/bpf.h`).
//!
//! Names are the kernel's constant names without the prefix, in lower case (`BPF_PROG_TYPE_SCHED_CLS` is
//! `sched_cls`, `BPF_TRACE_FENTRY` is `trace_fentry`); numbers are the kernel's, so the in-kernel gate and the policy
//! compiler can use them directly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! kernel_enum {
    ($(#[$m:meta])* $ty:ident, $err:literal, { $($variant:ident = $num:literal => $name:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum $ty { $(#[doc = concat!("`", $name, "`, number ", stringify!($num), ".")] $variant = $num,)* }

        impl $ty {
            /// Every value, in kernel order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];

            /// The kernel's number for this value.
            pub fn number(self) -> u32 { self as u32 }

            /// The value with the kernel's number `n`.
            pub fn from_number(n: u32) -> Option<$ty> {
                match n { $($num => Some($ty::$variant),)* _ => None }
            }

            /// The lower-case name used in reports and policies.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $ty::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| format!(concat!("unknown ", $err, " `{}`"), s))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.name()) }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

kernel_enum!(
    /// `enum bpf_prog_type`.
    ProgType, "program type", {
    Unspec = 0 => "unspec",
    SocketFilter = 1 => "socket_filter",
    Kprobe = 2 => "kprobe",
    SchedCls = 3 => "sched_cls",
    SchedAct = 4 => "sched_act",
    Tracepoint = 5 => "tracepoint",
    Xdp = 6 => "xdp",
    PerfEvent = 7 => "perf_event",
    CgroupSkb = 8 => "cgroup_skb",
    CgroupSock = 9 => "cgroup_sock",
    LwtIn = 10 => "lwt_in",
    LwtOut = 11 => "lwt_out",
    LwtXmit = 12 => "lwt_xmit",
    SockOps = 13 => "sock_ops",
    SkSkb = 14 => "sk_skb",
    CgroupDevice = 15 => "cgroup_device",
    SkMsg = 16 => "sk_msg",
    RawTracepoint = 17 => "raw_tracepoint",
    CgroupSockAddr = 18 => "cgroup_sock_addr",
    LwtSeg6local = 19 => "lwt_seg6local",
    LircMode2 = 20 => "lirc_mode2",
    SkReuseport = 21 => "sk_reuseport",
    FlowDissector = 22 => "flow_dissector",
    CgroupSysctl = 23 => "cgroup_sysctl",
    RawTracepointWritable = 24 => "raw_tracepoint_writable",
    CgroupSockopt = 25 => "cgroup_sockopt",
    Tracing = 26 => "tracing",
    StructOps = 27 => "struct_ops",
    Ext = 28 => "ext",
    Lsm = 29 => "lsm",
    SkLookup = 30 => "sk_lookup",
    Syscall = 31 => "syscall",
    Netfilter = 32 => "netfilter",
});

kernel_enum!(
    /// `enum bpf_attach_type`.
    AttachType, "attach type", {
    CgroupInetIngress = 0 => "cgroup_inet_ingress",
    CgroupInetEgress = 1 => "cgroup_inet_egress",
    CgroupInetSockCreate = 2 => "cgroup_inet_sock_create",
    CgroupSockOps = 3 => "cgroup_sock_ops",
    SkSkbStreamParser = 4 => "sk_skb_stream_parser",
    SkSkbStreamVerdict = 5 => "sk_skb_stream_verdict",
    CgroupDevice = 6 => "cgroup_device",
    SkMsgVerdict = 7 => "sk_msg_verdict",
    CgroupInet4Bind = 8 => "cgroup_inet4_bind",
    CgroupInet6Bind = 9 => "cgroup_inet6_bind",
    CgroupInet4Connect = 10 => "cgroup_inet4_connect",
    CgroupInet6Connect = 11 => "cgroup_inet6_connect",
    CgroupInet4PostBind = 12 => "cgroup_inet4_post_bind",
    CgroupInet6PostBind = 13 => "cgroup_inet6_post_bind",
    CgroupUdp4Sendmsg = 14 => "cgroup_udp4_sendmsg",
    CgroupUdp6Sendmsg = 15 => "cgroup_udp6_sendmsg",
    LircMode2 = 16 => "lirc_mode2",
    FlowDissector = 17 => "flow_dissector",
    CgroupSysctl = 18 => "cgroup_sysctl",
    CgroupUdp4Recvmsg = 19 => "cgroup_udp4_recvmsg",
    CgroupUdp6Recvmsg = 20 => "cgroup_udp6_recvmsg",
    CgroupGetsockopt = 21 => "cgroup_getsockopt",
    CgroupSetsockopt = 22 => "cgroup_setsockopt",
    TraceRawTp = 23 => "trace_raw_tp",
    TraceFentry = 24 => "trace_fentry",
    TraceFexit = 25 => "trace_fexit",
    ModifyReturn = 26 => "modify_return",
    LsmMac = 27 => "lsm_mac",
    TraceIter = 28 => "trace_iter",
    CgroupInet4Getpeername = 29 => "cgroup_inet4_getpeername",
    CgroupInet6Getpeername = 30 => "cgroup_inet6_getpeername",
    CgroupInet4Getsockname = 31 => "cgroup_inet4_getsockname",
    CgroupInet6Getsockname = 32 => "cgroup_inet6_getsockname",
    XdpDevmap = 33 => "xdp_devmap",
    CgroupInetSockRelease = 34 => "cgroup_inet_sock_release",
    XdpCpumap = 35 => "xdp_cpumap",
    SkLookup = 36 => "sk_lookup",
    Xdp = 37 => "xdp",
    SkSkbVerdict = 38 => "sk_skb_verdict",
    SkReuseportSelect = 39 => "sk_reuseport_select",
    SkReuseportSelectOrMigrate = 40 => "sk_reuseport_select_or_migrate",
    PerfEvent = 41 => "perf_event",
    TraceKprobeMulti = 42 => "trace_kprobe_multi",
    LsmCgroup = 43 => "lsm_cgroup",
    StructOps = 44 => "struct_ops",
    Netfilter = 45 => "netfilter",
    TcxIngress = 46 => "tcx_ingress",
    TcxEgress = 47 => "tcx_egress",
    TraceUprobeMulti = 48 => "trace_uprobe_multi",
    CgroupUnixConnect = 49 => "cgroup_unix_connect",
    CgroupUnixSendmsg = 50 => "cgroup_unix_sendmsg",
    CgroupUnixRecvmsg = 51 => "cgroup_unix_recvmsg",
    CgroupUnixGetpeername = 52 => "cgroup_unix_getpeername",
    CgroupUnixGetsockname = 53 => "cgroup_unix_getsockname",
    NetkitPrimary = 54 => "netkit_primary",
    NetkitPeer = 55 => "netkit_peer",
    TraceKprobeSession = 56 => "trace_kprobe_session",
    TraceUprobeSession = 57 => "trace_uprobe_session",
    TraceFsession = 58 => "trace_fsession",
    TraceFentryMulti = 59 => "trace_fentry_multi",
    TraceFexitMulti = 60 => "trace_fexit_multi",
    TraceFsessionMulti = 61 => "trace_fsession_multi",
});

impl ProgType {
    /// Program types whose context and helper results are BTF-typed pointers, so a load through them reads
    /// kernel memory.
    pub fn is_btf_typed(self) -> bool {
        matches!(self, ProgType::Tracing | ProgType::Lsm | ProgType::StructOps | ProgType::Ext)
    }

    /// Offsets of the context fields that hold packet pointers (data, data_meta; data_end is only compared
    /// against); empty for program types without direct packet access.
    pub fn packet_ctx_fields(self) -> &'static [i32] {
        match self {
            ProgType::SocketFilter
            | ProgType::SchedCls
            | ProgType::SchedAct
            | ProgType::CgroupSkb
            | ProgType::LwtIn
            | ProgType::LwtOut
            | ProgType::LwtXmit
            | ProgType::LwtSeg6local
            | ProgType::SkSkb
            | ProgType::FlowDissector => &[76, 140],
            ProgType::Xdp => &[0, 8],
            ProgType::SkMsg | ProgType::SkReuseport => &[0],
            ProgType::CgroupSockopt => &[8],
            // The loader sets the type (iproute2 and Cilium tail-call sections): any packet type's fields.
            ProgType::Unspec => &[0, 8, 76, 140],
            _ => &[],
        }
    }

    /// Whether the context hands out packet pointers, so stores may write packets.
    pub fn has_packet_ctx(self) -> bool {
        !self.packet_ctx_fields().is_empty()
    }
}

/// `BPF_MAP_TYPE_ARRAY`, the type libbpf gives global data maps.
pub const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY`: the programs a tail call can jump to.
pub const MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`, a map-in-map: lookups return an inner map, not a value.
pub const MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS`, a map-in-map like [`MAP_TYPE_ARRAY_OF_MAPS`].
pub const MAP_TYPE_HASH_OF_MAPS: u32 = 13;
/// `BPF_MAP_TYPE_ARENA`: memory shared with user space, addressed directly by the program.
pub const MAP_TYPE_ARENA: u32 = 33;
