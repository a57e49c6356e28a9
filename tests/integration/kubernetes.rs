//! deploy/kubernetes/: the manifests' structure (kinds, names, selectors, volumes and mounts), the policy in the
//! ConfigMap (parses, lints clean), the daemon's arguments (real `enforce` options, the policy at a path the
//! ConfigMap volume provides, no subPath so updates arrive), and that every path the daemon opens is mounted
//! from the node (gate-bpf/src: daemon.rs, gate.rs, resolve.rs, event.rs).

use std::collections::BTreeSet;
use std::path::Path;

use saphyr_parser::{Event, Parser};

use crate::support::{bpfgate, repo};

/// A YAML node: enough of YAML for Kubernetes manifests (no anchors or tags).
#[derive(Debug, Clone)]
pub enum Yaml {
    Scalar(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at a dotted path of mapping keys; panics with the path when it is missing.
    pub fn at(&self, path: &str) -> &Yaml {
        path.split('.').fold(self, |node, key| node.get(key).unwrap_or_else(|| panic!("no `{path}` (at `{key}`)")))
    }

    pub fn str(&self) -> &str {
        match self {
            Yaml::Scalar(s) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    pub fn seq(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            other => panic!("not a sequence: {other:?}"),
        }
    }

    pub fn map(&self) -> &[(String, Yaml)] {
        match self {
            Yaml::Map(pairs) => pairs,
            other => panic!("not a mapping: {other:?}"),
        }
    }
}

/// Parses a YAML stream into its documents.
pub fn parse_yaml(text: &str) -> Vec<Yaml> {
    fn node<'a>(p: &mut Parser<'a, saphyr_parser::StrInput<'a>>, first: Event<'a>) -> Yaml {
        match first {
            Event::Scalar(v, ..) => Yaml::Scalar(v.into_owned()),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                loop {
                    match next(p) {
                        Event::SequenceEnd => return Yaml::Seq(items),
                        ev => items.push(node(p, ev)),
                    }
                }
            }
            Event::MappingStart(..) => {
                let mut pairs = Vec::new();
                loop {
                    match next(p) {
                        Event::MappingEnd => return Yaml::Map(pairs),
                        ev => {
                            let Yaml::Scalar(k) = node(p, ev) else { panic!("a non-scalar mapping key") };
                            let v = next(p);
                            let v = node(p, v);
                            assert!(!pairs.iter().any(|(seen, _)| *seen == k), "duplicate key `{k}`");
                            pairs.push((k, v));
                        }
                    }
                }
            }
            ev => panic!("unexpected YAML event {ev:?}"),
        }
    }
    fn next<'a>(p: &mut Parser<'a, saphyr_parser::StrInput<'a>>) -> Event<'a> {
        p.next_event().expect("YAML ends early").expect("valid YAML").0
    }
    let mut p = Parser::new_from_str(text);
    let mut docs = Vec::new();
    loop {
        match next(&mut p) {
            Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {}
            Event::StreamEnd => return docs,
            ev => docs.push(node(&mut p, ev)),
        }
    }
}

fn manifest(name: &str) -> Yaml {
    let path = repo().join("deploy/kubernetes").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = parse_yaml(&text);
    assert_eq!(docs.len(), 1, "{name}: one document per file");
    docs.remove(0)
}

/// The names of a string list.
fn strings(node: &Yaml) -> Vec<&str> {
    node.seq().iter().map(Yaml::str).collect()
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = manifest("kustomization.yaml");
    assert_eq!(k.at("kind").str(), "Kustomization");
    let listed: BTreeSet<&str> = strings(k.at("resources")).into_iter().collect();
    let mut on_disk = BTreeSet::new();
    for e in std::fs::read_dir(repo().join("deploy/kubernetes")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            on_disk.insert(name);
        }
    }
    assert_eq!(listed, on_disk.iter().map(String::as_str).collect(), "kustomization resources vs files");
}

#[test]
fn daemonset_structure() {
    let ns = manifest("namespace.yaml");
    let cm = manifest("configmap.yaml");
    let ds = manifest("daemonset.yaml");
    assert_eq!((ns.at("apiVersion").str(), ns.at("kind").str()), ("v1", "Namespace"));
    assert_eq!((cm.at("apiVersion").str(), cm.at("kind").str()), ("v1", "ConfigMap"));
    assert_eq!((ds.at("apiVersion").str(), ds.at("kind").str()), ("apps/v1", "DaemonSet"));
    let namespace = ns.at("metadata.name").str();
    assert_eq!(cm.at("metadata.namespace").str(), namespace);
    assert_eq!(ds.at("metadata.namespace").str(), namespace);

    // The selector selects the template's pods (every matchLabels pair is among the template's labels).
    let labels = ds.at("spec.template.metadata.labels").map();
    for (k, v) in ds.at("spec.selector.matchLabels").map() {
        assert!(
            labels.iter().any(|(lk, lv)| lk == k && lv.str() == v.str()),
            "selector {k}={} matches no label",
            v.str()
        );
    }

    let pod = ds.at("spec.template.spec");
    let volumes = pod.at("volumes").seq();
    let volume_names: Vec<&str> = volumes.iter().map(|v| v.at("name").str()).collect();
    let unique: BTreeSet<&str> = volume_names.iter().copied().collect();
    assert_eq!(unique.len(), volume_names.len(), "duplicate volume names: {volume_names:?}");
    let containers = pod.at("containers").seq();
    assert_eq!(containers.len(), 1);
    let mut used = BTreeSet::new();
    for c in containers {
        for m in c.at("volumeMounts").seq() {
            let name = m.at("name").str();
            assert!(unique.contains(name), "mount of undefined volume `{name}`");
            used.insert(name);
            // Everything from the node is read-only: the daemon writes nowhere without --persist.
            assert_eq!(m.get("readOnly").map(Yaml::str), Some("true"), "mount `{name}` is not read-only");
        }
    }
    assert_eq!(used, unique, "volumes defined but not mounted");

    // The ConfigMap volume names the ConfigMap defined here.
    let cm_name = cm.at("metadata.name").str();
    let cm_vol = volumes.iter().find(|v| v.get("configMap").is_some()).expect("a configMap volume");
    assert_eq!(cm_vol.at("configMap.name").str(), cm_name);
}

/// The container's arguments, the mount of each volume and the host path behind each hostPath volume.
struct Pod {
    host_pid: bool,
    args: Vec<String>,
    /// (mount path, volume name)
    mounts: Vec<(String, String)>,
    /// (volume name, host path)
    host_paths: Vec<(String, String)>,
    configmap_volume: String,
}

fn pod() -> Pod {
    let ds = manifest("daemonset.yaml");
    let pod = ds.at("spec.template.spec");
    let c = &pod.at("containers").seq()[0];
    let mut args: Vec<String> = strings(c.at("command")).into_iter().map(str::to_owned).collect();
    args.extend(strings(c.at("args")).into_iter().map(str::to_owned));
    for m in c.at("volumeMounts").seq() {
        assert!(m.get("subPath").is_none(), "a subPath mount never receives ConfigMap updates");
    }
    let mounts = c
        .at("volumeMounts")
        .seq()
        .iter()
        .map(|m| (m.at("mountPath").str().to_owned(), m.at("name").str().to_owned()))
        .collect();
    let volumes = pod.at("volumes").seq();
    let host_paths = volumes
        .iter()
        .filter_map(|v| Some((v.at("name").str().to_owned(), v.get("hostPath")?.at("path").str().to_owned())))
        .collect();
    let configmap_volume = volumes
        .iter()
        .find(|v| v.get("configMap").is_some())
        .map(|v| v.at("name").str().to_owned())
        .expect("configMap");
    Pod { host_pid: pod.get("hostPID").map(Yaml::str) == Some("true"), args, mounts, host_paths, configmap_volume }
}

impl Pod {
    fn arg_value(&self, flag: &str) -> Option<&str> {
        self.args.iter().position(|a| a == flag).and_then(|i| self.args.get(i + 1)).map(String::as_str)
    }

    /// The mount the container's `path` goes through (the longest mount path that contains it).
    fn mount_of(&self, path: &str) -> Option<&(String, String)> {
        self.mounts.iter().filter(|(m, _)| Path::new(path).starts_with(m)).max_by_key(|(m, _)| m.len())
    }

    /// Whether `path` in the container is the node's `path`: it goes through a hostPath mount of the same path.
    fn is_node_path(&self, path: &str) -> bool {
        self.mount_of(path)
            .is_some_and(|(mount, volume)| self.host_paths.iter().any(|(v, host)| v == volume && host == mount))
    }
}

/// The ConfigMap's policy file: (key, content).
fn configmap_policy() -> (String, String) {
    let cm = manifest("configmap.yaml");
    let data = cm.at("data").map();
    assert_eq!(data.len(), 1, "one policy file in the ConfigMap");
    (data[0].0.clone(), data[0].1.str().to_owned())
}

#[test]
fn the_configmap_policy_parses_and_lints_clean() {
    let (key, text) = configmap_policy();
    let policy = bpfgate::policy::Policy::parse(&key, &text).unwrap_or_else(|e| panic!("{e}"));
    let warnings = policy.lint();
    assert!(warnings.is_empty(), "lint warnings: {warnings:?}");
    assert!(text.contains("\nmode: audit\n"), "the shipped policy starts in audit mode");
}

#[test]
fn arguments_are_enforce_options_and_name_the_configmap_file() {
    let pod = pod();
    assert_eq!(pod.args[0], "/bpfgate", "the image's binary (deploy/kubernetes/Containerfile)");
    assert_eq!(pod.args[1], "enforce");
    let help = bpfgate(&["enforce", "--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in pod.args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "`{flag}` is not an enforce option"
        );
    }
    // JSON events on stdout, and reloads when the kubelet swaps the ConfigMap's files.
    assert!(pod.args.iter().any(|a| a == "--json"));
    assert!(pod.args.iter().any(|a| a == "--follow"));
    // The policy file is a key of the ConfigMap, in the directory its volume is mounted at.
    let policy = pod.arg_value("--policy").expect("--policy");
    let (key, _) = configmap_policy();
    let (mount, volume) = pod.mount_of(policy).expect("the policy is mounted");
    assert_eq!(volume, &pod.configmap_volume);
    assert_eq!(Path::new(policy), Path::new(mount).join(&key));
}

/// `--metrics` listens on the port the container declares, the Prometheus annotations name, and the readiness
/// probe asks (by name).
#[test]
fn the_metrics_port_is_declared_annotated_and_probed() {
    let pod = pod();
    let addr: std::net::SocketAddr = pod.arg_value("--metrics").expect("--metrics").parse().expect("an address");
    assert!(addr.ip().is_unspecified(), "{addr}: a scraper reaches the pod's IP, not its loopback");
    let ds = manifest("daemonset.yaml");
    let c = &ds.at("spec.template.spec.containers").seq()[0];
    let port = c.at("ports").seq().iter().find(|p| p.at("name").str() == "metrics").expect("a port named metrics");
    assert_eq!(port.at("containerPort").str(), addr.port().to_string());
    let annotations = ds.at("spec.template.metadata.annotations");
    assert_eq!(annotations.get("prometheus.io/scrape").map(Yaml::str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port").map(Yaml::str), Some(addr.port().to_string().as_str()));
    assert_eq!(annotations.get("prometheus.io/path").map(Yaml::str), Some("/metrics"));
    assert_eq!(c.at("readinessProbe.httpGet.path").str(), "/metrics");
    assert_eq!(c.at("readinessProbe.httpGet.port").str(), "metrics");
}

#[test]
fn every_path_the_daemon_opens_is_the_nodes() {
    let pod = pod();
    // /proc/PID/exe of each event's loader and the daemon's own tgid (compiled into the gate for
    // self-protection, compared with bpf_get_current_pid_tgid) are the node's PID namespace's.
    assert!(pod.host_pid, "hostPID: true");
    // libbpf's btf__load_vmlinux_btf.
    assert!(pod.is_node_path("/sys/kernel/btf/vmlinux"), "/sys/kernel/btf from the node");
    // HostResolver: the first cgroup2 mount in /proc/self/mountinfo is the runtime's /sys/fs/cgroup; a hostPath
    // at the same path covers it, so paths resolve in the node's whole tree, not the pod's namespaced one.
    assert!(pod.is_node_path("/sys/fs/cgroup"), "/sys/fs/cgroup from the node");
    // bpffs is written only by --persist.
    if pod.args.iter().any(|a| a == "--persist") {
        let dir = pod.arg_value("--pin-dir").unwrap_or("/sys/fs/bpf/bpfgate");
        assert!(pod.is_node_path(dir), "--persist needs bpffs from the node");
    }
    // Every subject path of the policy resolves on the node: exe paths through same-path hostPath mounts,
    // cgroup paths under the node's cgroup tree.
    let (key, text) = configmap_policy();
    let policy = bpfgate::policy::Policy::parse(&key, &text).unwrap();
    let mut exes = 0;
    for rule in &policy.rules {
        for exe in &rule.subject.exe {
            assert!(
                pod.is_node_path(&exe.value),
                "policy exe {} is not under a hostPath mount of the same path",
                exe.value
            );
            exes += 1;
        }
        if let Some(cgroup) = &rule.subject.cgroup {
            let path = format!("/sys/fs/cgroup{}", cgroup.value);
            assert!(pod.is_node_path(&path), "policy cgroup {} does not resolve in the node's tree", cgroup.value);
        }
    }
    assert!(exes > 0, "the test saw the policy's exe subjects");
}

#[test]
fn least_privilege() {
    let ds = manifest("daemonset.yaml");
    let pod = ds.at("spec.template.spec");
    assert_eq!(pod.at("automountServiceAccountToken").str(), "false");
    assert!(pod.get("hostNetwork").is_none_or(|v| v.str() == "false"));
    let sc = pod.at("containers").seq()[0].at("securityContext");
    assert_eq!(sc.at("privileged").str(), "false");
    assert_eq!(sc.at("allowPrivilegeEscalation").str(), "false");
    assert_eq!(sc.at("readOnlyRootFilesystem").str(), "true");
    assert_eq!(strings(sc.at("capabilities.drop")), ["ALL"]);
    // The same set as the systemd unit's bounding set (packaging/bpfgate.service), each justified in both.
    let mut add: Vec<&str> = strings(sc.at("capabilities.add"));
    add.sort();
    assert_eq!(add, ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]);
    let unit = std::fs::read_to_string(repo().join("packaging/bpfgate.service")).unwrap();
    let bounding = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("bounding set");
    let mut unit_caps: Vec<&str> = bounding.split_whitespace().map(|c| c.trim_start_matches("CAP_")).collect();
    unit_caps.sort();
    assert_eq!(add, unit_caps, "the DaemonSet and the systemd unit grant the same capabilities");
}

#[test]
fn yaml_reader_reads_what_the_manifests_use() {
    let docs = parse_yaml("a: [x, 'y']\nb:\n  c: |\n    l1\n    l2\n---\n- 1\n");
    assert_eq!(docs.len(), 2);
    assert_eq!(strings(docs[0].at("a")), ["x", "y"]);
    assert_eq!(docs[0].at("b.c").str(), "l1\nl2\n");
    assert_eq!(docs[1].seq()[0].str(), "1");
}
