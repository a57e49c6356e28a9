//! `bpfgate enforce --metrics ADDR`: the gate's counters in the Prometheus text format (version 0.0.4), at
//! `GET /metrics`.
//!
//! The exposition format is written by `prometheus-client` (the Prometheus project's Rust client); each scrape
//! builds a fresh registry from a [`Status`] read through the daemon's own fds (the same read as `bpfgate
//! status`) and from the load events the daemon has printed. The HTTP side is a few lines of `std`: one thread,
//! one request per connection, `GET /metrics` only, a 2 s read and write timeout and an 8 KiB request limit.
//! A crate (tiny_http, hyper) would bring a general HTTP parser, threads or an async runtime into a process
//! that holds CAP_SYS_ADMIN, for one fixed response to a scraper on the node.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::event::Event;
use crate::status::{GateReader, Status, DEFAULT_RULE};

type Labels = Vec<(String, String)>;

/// Program loads by (rule, action, class), from the load events the daemon read.
#[derive(Debug, Default)]
pub struct ClassCounts(Mutex<BTreeMap<(String, String, String), u64>>);

impl ClassCounts {
    /// Counts a `load` event (the decision at `lsm/bpf_prog_load`, before the map rules) once per class it has.
    pub fn record(&self, e: &Event) {
        if e.op != "load" {
            return;
        }
        let action = action_label(e.verdict).to_owned();
        let rule = e.rule_name.clone().unwrap_or_else(|| DEFAULT_RULE.to_owned());
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in &e.classes {
            *counts.entry((rule.clone(), action.clone(), c.class.name().to_owned())).or_default() += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<(String, String, String), u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn action_label(verdict: &str) -> &'static str {
    match verdict {
        "allow" => "allowed",
        "deny" => "denied",
        _ => "audited",
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The exposition of `status` and `classes`.
pub fn render(status: &Status, classes: &ClassCounts) -> String {
    let mut registry = Registry::with_prefix("bpfgate");

    let decisions = Family::<Labels, Counter>::default();
    registry.register(
        "decisions",
        "Decisions since the daemon started, by rule ((default) for the policy default), kind (load: a program \
         load at its final decision; open: an fd to another subject's map or program) and action",
        decisions.clone(),
    );
    // Every rule in force has its series from the start, at 0 until it decides something.
    let unseen = status.rules.iter().filter(|r| !status.totals.iter().any(|t| t.rule == r.rule));
    let zero = unseen.map(|r| crate::status::RuleCounts { rule: r.rule.clone(), ..Default::default() });
    for r in status.totals.iter().cloned().chain(zero) {
        for (kind, v) in [("load", &r.loads), ("open", &r.opens)] {
            for (action, n) in v.labelled() {
                decisions.get_or_create(&labels(&[("rule", &r.rule), ("kind", kind), ("action", action)])).inc_by(n);
            }
        }
    }

    let by_class = Family::<Labels, Counter>::default();
    registry.register(
        "load_classes",
        "Program loads by capability class, rule and action, from the load events the daemon read (the decision \
         at lsm/bpf_prog_load, before the map rules; events dropped are not counted)",
        by_class.clone(),
    );
    for ((rule, action, class), n) in classes.snapshot() {
        by_class.get_or_create(&labels(&[("rule", &rule), ("action", &action), ("class", &class)])).inc_by(n);
    }

    let refused = Counter::<u64>::default();
    refused.inc_by(status.gate_objects_refused);
    registry.register(
        "gate_object_refusals",
        "Fds to the gate's own maps, programs and links refused to other processes",
        refused,
    );
    let dropped = Counter::<u64>::default();
    dropped.inc_by(status.dropped_events);
    registry.register("dropped_events", "Decision events lost to a full ring buffer (decisions were made)", dropped);

    let attached = Gauge::<i64>::default();
    attached.set(i64::from(status.attached));
    registry.register("attached", "1 while every hook of the gate is attached", attached);
    if let Some(p) = &status.policy {
        let generation = Gauge::<i64>::default();
        generation.set(i64::try_from(p.generation).unwrap_or(i64::MAX));
        registry.register(
            "policy_generation",
            "Generation of the policy in force (1 at start, +1 per install)",
            generation,
        );
        let loaded = Gauge::<i64>::default();
        loaded.set(i64::try_from(p.loaded_at_unix).unwrap_or(i64::MAX));
        registry.register("policy_loaded_timestamp_seconds", "When the policy in force was installed", loaded);
        let unresolved = Gauge::<i64>::default();
        unresolved.set(i64::try_from(p.unresolved.len()).unwrap_or(i64::MAX));
        registry.register(
            "policy_unresolved_executables",
            "Executables of the policy in force that do not exist on this host",
            unresolved,
        );
        let info = Family::<Labels, Gauge>::default();
        registry.register("policy_info", "The policy in force: file, SHA-256 and mode", info.clone());
        info.get_or_create(&labels(&[
            ("path", p.path.as_deref().unwrap_or("")),
            ("sha256", p.sha256.as_deref().unwrap_or("")),
            ("mode", p.mode),
        ]))
        .set(1);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

/// Serves `GET /metrics` on `listener` until the process ends (run it on a thread of its own).
pub fn serve(listener: TcpListener, reader: GateReader, classes: Arc<ClassCounts>) {
    for stream in listener.incoming() {
        // A client that misbehaves costs itself its answer, nothing else.
        let Ok(stream) = stream else { continue };
        let _ = respond(stream, &reader, &classes);
    }
}

const REQUEST_LIMIT: usize = 8192;

fn respond(mut s: TcpStream, reader: &GateReader, classes: &ClassCounts) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; REQUEST_LIMIT];
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let mut words = request.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (code, content_type, body) = match (method, path) {
        ("GET", "/metrics") => match reader.status() {
            Ok(status) => ("200 OK", prometheus_text::CONTENT_TYPE, render(&status, classes)),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("bpfgate: {e}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "bpfgate: metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "bpfgate: GET only\n".to_owned()),
    };
    write!(
        s,
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Daemon, Mode, PolicyStatus, RuleCounts, Verdicts, STATUS_SCHEMA_VERSION};

    fn status() -> Status {
        Status {
            schema_version: STATUS_SCHEMA_VERSION,
            found: true,
            attached: true,
            mode: Mode::FdBound,
            daemon: Daemon { pid: 1, running: true },
            pin_dir: None,
            hooks: Vec::new(),
            policy: Some(PolicyStatus {
                path: Some("/etc/bpfgate/policy.yaml".into()),
                sha256: Some("ab".into()),
                generation: 2,
                mode: "enforce",
                loaded_at: "2026-12-05T20:41:07Z".into(),
                loaded_at_unix: 1_796_503_267,
                unresolved: vec!["/usr/bin/gone".into()],
            }),
            rules: vec![RuleCounts { rule: "idle".into(), index: Some(1), ..Default::default() }],
            totals: vec![RuleCounts {
                rule: "bpftrace".into(),
                index: None,
                loads: Verdicts { allowed: 3, denied: 1, audited: 0 },
                opens: Verdicts::default(),
            }],
            gate_objects_refused: 4,
            dropped_events: 5,
            other_gates: 0,
        }
    }

    #[test]
    fn the_exposition_has_every_family() {
        let classes = ClassCounts::default();
        classes.0.lock().unwrap().insert(("bpftrace".into(), "allowed".into(), "map_write".into()), 3);
        let text = render(&status(), &classes);
        for line in [
            "# TYPE bpfgate_decisions_total counter",
            "bpfgate_decisions_total{rule=\"bpftrace\",kind=\"load\",action=\"allowed\"} 3",
            "bpfgate_decisions_total{rule=\"bpftrace\",kind=\"load\",action=\"denied\"} 1",
            "bpfgate_decisions_total{rule=\"bpftrace\",kind=\"open\",action=\"audited\"} 0",
            "bpfgate_decisions_total{rule=\"idle\",kind=\"load\",action=\"denied\"} 0",
            "bpfgate_load_classes_total{rule=\"bpftrace\",action=\"allowed\",class=\"map_write\"} 3",
            "bpfgate_gate_object_refusals_total 4",
            "bpfgate_dropped_events_total 5",
            "bpfgate_attached 1",
            "bpfgate_policy_generation 2",
            "bpfgate_policy_loaded_timestamp_seconds 1796503267",
            "bpfgate_policy_unresolved_executables 1",
            "bpfgate_policy_info{path=\"/etc/bpfgate/policy.yaml\",sha256=\"ab\",mode=\"enforce\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }
}
