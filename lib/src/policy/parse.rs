//! From the located YAML tree to a validated [`Policy`], collecting every error with its location.
//!
//! Not serde: a hand-written walk over [`yaml::Node`] is what lets unknown fields, unknown names and
//! contradictions point at the exact line and column.

use std::collections::BTreeMap;

use super::schema::*;
use super::yaml::{self, Kind, Node};
use super::{ErrorKind, PolicyError, PolicyErrors};
use crate::metadata::{Capability, ClassSet};
use crate::progtype::{AttachType, ProgType};

const TOP_FIELDS: &str = "version, mode, default, rules";
const RULE_FIELDS: &str =
    "name, subject, action, capabilities, prog_types, attach_types, attach_targets, max_insns, maps, probes";
const PROBE_FIELDS: &str = "prog_types, max_insns";
const SUBJECT_FIELDS: &str = "exe, cgroup, uid";
const CAP_FIELDS: &str = "allow, deny";
const MAP_FIELDS: &str = "write, named, pinned";

pub(crate) fn parse(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
    let mut cx = Cx { file, errors: Vec::new() };
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            cx.err(Loc { line: 1, column: 1 }, ErrorKind::Empty);
            return Err(PolicyErrors(cx.errors));
        }
        Err((loc, what)) => {
            cx.err(loc, what);
            return Err(PolicyErrors(cx.errors));
        }
    };
    let policy = cx.policy(&root);
    match policy {
        Some(p) if cx.errors.is_empty() => Ok(p),
        _ => {
            cx.errors.sort_by_key(|e| (e.line, e.column));
            Err(PolicyErrors(cx.errors))
        }
    }
}

struct Cx<'f> {
    file: &'f str,
    errors: Vec<PolicyError>,
}

/// The fields of one mapping, after unknown and duplicate keys were reported.
struct Fields<'n> {
    loc: Loc,
    map: BTreeMap<&'n str, (&'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, k: &str) -> Option<&'n Node> {
        self.map.get(k).map(|(_, v)| *v)
    }
}

impl<'f> Cx<'f> {
    fn err(&mut self, loc: Loc, what: ErrorKind) {
        self.errors.push(PolicyError { file: self.file.to_owned(), line: loc.line, column: loc.column, what });
    }

    fn wrong_type(&mut self, node: &Node, context: &str, expected: &'static str) {
        self.err(node.loc, ErrorKind::WrongType { context: context.to_owned(), expected, found: node.type_name() });
    }

    fn fields<'n>(&mut self, node: &'n Node, context: &'static str, known: &'static str) -> Option<Fields<'n>> {
        let Kind::Map(pairs) = &node.kind else {
            self.wrong_type(node, context, "a mapping");
            return None;
        };
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let Kind::Scalar { value: key, .. } = &k.kind else {
                self.wrong_type(k, context, "a field name");
                continue;
            };
            if !known.split(", ").any(|f| f == key) {
                self.err(k.loc, ErrorKind::UnknownField { field: key.clone(), context, expected: known });
                continue;
            }
            if map.insert(key.as_str(), (k, v)).is_some() {
                self.err(k.loc, ErrorKind::DuplicateKey { key: key.clone() });
            }
        }
        Some(Fields { loc: node.loc, map })
    }

    fn string(&mut self, node: &Node, context: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => Some(value.clone()),
            _ => {
                self.wrong_type(node, context, "a string");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, context: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, context, "a list");
                None
            }
        }
    }

    fn uint(&mut self, node: &Node, field: &'static str, min: u64, max: u64) -> Option<u64> {
        let Kind::Scalar { value, plain: true } = &node.kind else {
            self.wrong_type(node, field, "an integer");
            return None;
        };
        let v = value.replace('_', "");
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse::<u64>().ok(),
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(node.loc, ErrorKind::OutOfRange { field, value: value.clone(), min, max });
                None
            }
        }
    }

    fn keyword<T: Copy>(
        &mut self,
        node: &Node,
        what: &'static str,
        all: &[T],
        name: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        let s = self.string(node, what)?;
        let found = all.iter().copied().find(|v| name(*v) == s);
        if found.is_none() {
            let expected = match what {
                "mode" => "enforce, audit",
                "maps.write" => "any, own, none",
                "maps.pinned" => "allow, deny",
                _ => "allow, deny, audit",
            };
            self.err(node.loc, ErrorKind::UnknownKeyword { what, name: s, expected });
        }
        found
    }

    fn policy(&mut self, root: &Node) -> Option<Policy> {
        let f = self.fields(root, "the policy", TOP_FIELDS)?;
        // The version decides how everything else reads, so a wrong one stops here.
        let Some(vnode) = f.get("version") else {
            self.err(f.loc, ErrorKind::MissingField { field: "version", context: "the policy" });
            return None;
        };
        match &vnode.kind {
            Kind::Scalar { value, plain: true } if value == "1" => {}
            Kind::Scalar { value, plain: true } => {
                self.err(
                    vnode.loc,
                    ErrorKind::UnsupportedVersion { version: value.clone(), supported: POLICY_VERSION },
                );
                return None;
            }
            _ => {
                self.wrong_type(vnode, "version", "an integer");
                return None;
            }
        }
        let mode = match f.get("mode") {
            Some(n) => self.keyword(n, "mode", &Mode::ALL, Mode::name).unwrap_or_default(),
            None => Mode::Enforce,
        };
        let default = match f.get("default") {
            Some(n) => self.keyword(n, "default", &Action::ALL, Action::name).unwrap_or(Action::Deny),
            None => Action::Deny,
        };
        let mut rules = Vec::new();
        match f.get("rules") {
            None => self.err(f.loc, ErrorKind::MissingField { field: "rules", context: "the policy" }),
            Some(n) if n.is_null() => {}
            Some(n) => {
                let mut names: BTreeMap<String, u32> = BTreeMap::new();
                for item in self.list(n, "rules").unwrap_or_default() {
                    if let Some(rule) = self.rule(item) {
                        if let Some(first) = names.get(&rule.name) {
                            let what = ErrorKind::DuplicateRuleName { name: rule.name.clone(), first_line: *first };
                            self.err(rule.loc, what);
                        } else {
                            names.insert(rule.name.clone(), rule.loc.line);
                        }
                        rules.push(rule);
                    }
                }
            }
        }
        Some(Policy { file: self.file.to_owned(), version: POLICY_VERSION, mode, default, rules })
    }

    fn rule(&mut self, node: &Node) -> Option<Rule> {
        let f = self.fields(node, "a rule", RULE_FIELDS)?;
        let name = match f.get("name") {
            Some(n) => {
                let s = self.string(n, "name");
                if s.as_deref() == Some("") {
                    self.err(n.loc, ErrorKind::EmptyValue { field: "name" });
                }
                s
            }
            None => {
                self.err(f.loc, ErrorKind::MissingField { field: "name", context: "a rule" });
                None
            }
        };
        let subject = match f.get("subject") {
            Some(n) => self.subject(n),
            None => {
                self.err(f.loc, ErrorKind::MissingField { field: "subject", context: "a rule" });
                None
            }
        };
        let action = match f.get("action") {
            Some(n) => self.keyword(n, "action", &Action::ALL, Action::name),
            None => Some(Action::Allow),
        };
        let capabilities = match f.get("capabilities") {
            Some(n) => self.classes(n),
            None => Some(ClassRule::default()),
        };
        let prog_types = self.opt_names(f.get("prog_types"), "prog_types", |s| {
            s.parse::<ProgType>().map_err(|_| ErrorKind::UnknownProgType { name: s.to_owned() })
        });
        let attach_types = self.opt_names(f.get("attach_types"), "attach_types", |s| {
            s.parse::<AttachType>().map_err(|_| ErrorKind::UnknownAttachType { name: s.to_owned() })
        });
        let attach_targets = match f.get("attach_targets") {
            Some(n) => self.patterns(n, "attach_targets", false).map(Some),
            None => Some(None),
        };
        let max_insns = match f.get("max_insns") {
            Some(n) => self.uint(n, "max_insns", 1, u32::MAX.into()).map(|v| Some(v as u32)),
            None => Some(None),
        };
        let maps = match f.get("maps") {
            Some(n) => self.maps(n),
            None => Some(MapRule::default()),
        };
        let probes = match f.get("probes") {
            Some(n) => self.probes(n).map(Some),
            None => Some(None),
        };
        Some(Rule {
            name: name?,
            loc: f.loc,
            subject: subject?,
            action: action?,
            capabilities: capabilities?,
            prog_types: prog_types?,
            attach_types: attach_types?,
            attach_targets: attach_targets?,
            max_insns: max_insns?,
            maps: maps?,
            probes: probes?,
        })
    }

    fn probes(&mut self, node: &Node) -> Option<Probes> {
        let f = self.fields(node, "probes", PROBE_FIELDS)?;
        let prog_types = match f.get("prog_types") {
            Some(_) => self.opt_names(f.get("prog_types"), "prog_types", |s| {
                s.parse::<ProgType>().map_err(|_| ErrorKind::UnknownProgType { name: s.to_owned() })
            }),
            None => {
                self.err(f.loc, ErrorKind::MissingField { field: "prog_types", context: "probes" });
                None
            }
        };
        let max_insns = match f.get("max_insns") {
            Some(n) => self.uint(n, "max_insns", 1, Probes::MAX_INSNS.into()).map(|v| v as u32),
            None => {
                self.err(f.loc, ErrorKind::MissingField { field: "max_insns", context: "probes" });
                None
            }
        };
        Some(Probes { prog_types: prog_types??, max_insns: max_insns? })
    }

    fn subject(&mut self, node: &Node) -> Option<SubjectMatch> {
        let f = self.fields(node, "a subject", SUBJECT_FIELDS)?;
        let mut ok = true;
        let mut s = SubjectMatch::default();
        if let Some(n) = f.get("exe") {
            // One path, or a list of them (a suite of tools, each its own executable).
            let items: Vec<&Node> = match &n.kind {
                Kind::Seq(items) => {
                    if items.is_empty() {
                        self.err(
                            n.loc,
                            ErrorKind::InvalidValue {
                                field: "exe",
                                value: "[]".into(),
                                why: "an empty list matches no executable; leave `exe` out to match any",
                            },
                        );
                        ok = false;
                    }
                    items.iter().collect()
                }
                _ => vec![n],
            };
            for item in items {
                match self.path(item, "exe") {
                    Some(p) if !s.exe.iter().any(|e| e.value == p) => s.exe.push(Located::new(p, item.loc)),
                    Some(_) => {}
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get("cgroup") {
            match self.path(n, "cgroup") {
                Some(p) => s.cgroup = Some(Located::new(p, n.loc)),
                None => ok = false,
            }
        }
        if let Some(n) = f.get("uid") {
            // (uid_t)-1 means "no uid" to the kernel, so it cannot name a subject.
            match self.uint(n, "uid", 0, u64::from(u32::MAX - 1)) {
                Some(u) => s.uid = Some(Located::new(u as u32, n.loc)),
                None => ok = false,
            }
        }
        ok.then_some(s)
    }

    /// An absolute path, normalised (no empty, `.` or `..` components): the daemon resolves it as written.
    fn path(&mut self, node: &Node, field: &'static str) -> Option<String> {
        let raw = self.string(node, field)?;
        let why = if !raw.starts_with('/') {
            Some("must be an absolute path")
        } else if raw.split('/').any(|c| c == "." || c == "..") {
            Some("must not contain `.` or `..` components")
        } else if raw.contains(['*', '?', '[']) {
            Some("is an exact path; globs are not supported")
        } else if raw.contains(|c: char| c.is_control()) {
            Some("contains a control character")
        } else if field == "exe" && raw.ends_with('/') {
            Some("names a directory, not an executable")
        } else {
            None
        };
        if let Some(why) = why {
            self.err(node.loc, ErrorKind::InvalidValue { field, value: raw, why });
            return None;
        }
        Some(normalize_path(&raw))
    }

    fn classes(&mut self, node: &Node) -> Option<ClassRule> {
        let f = self.fields(node, "capabilities", CAP_FIELDS)?;
        let located = |cx: &mut Self, field: &'static str| -> Option<Option<Vec<(Capability, Loc)>>> {
            let Some(n) = f.get(field) else { return Some(None) };
            let items = cx.list(n, field)?;
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                let Some(s) = cx.string(item, field) else {
                    ok = false;
                    continue;
                };
                match s.parse::<Capability>() {
                    Ok(c) => out.push((c, item.loc)),
                    Err(_) => {
                        let known = Capability::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
                        cx.err(item.loc, ErrorKind::UnknownCapability { name: s, known });
                        ok = false;
                    }
                }
            }
            ok.then_some(Some(out))
        };
        let allow = located(self, "allow");
        let deny = located(self, "deny");
        let (allow, deny) = (allow?, deny?);
        let allow_set: Option<ClassSet> = allow.map(|v| v.iter().map(|(c, _)| *c).collect());
        let mut deny_set = ClassSet::EMPTY;
        let mut ok = true;
        for (c, loc) in deny.unwrap_or_default() {
            if allow_set.is_some_and(|a| a.contains(c)) {
                self.err(loc, ErrorKind::Contradiction { class: c.name().to_owned() });
                ok = false;
            }
            deny_set.insert(c);
        }
        ok.then_some(ClassRule { allow: allow_set, deny: deny_set })
    }

    fn opt_names<T: Ord + Copy>(
        &mut self,
        node: Option<&Node>,
        field: &'static str,
        parse: impl Fn(&str) -> Result<T, ErrorKind>,
    ) -> Option<Option<Vec<T>>> {
        let Some(node) = node else { return Some(None) };
        let items = self.list(node, field)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(s) = self.string(item, field) else {
                ok = false;
                continue;
            };
            match parse(&s) {
                Ok(v) => out.push(v),
                Err(e) => {
                    self.err(item.loc, e);
                    ok = false;
                }
            }
        }
        out.sort();
        out.dedup();
        ok.then_some(Some(out))
    }

    fn patterns(&mut self, node: &Node, field: &'static str, map_names: bool) -> Option<Vec<Pattern>> {
        let items = self.list(node, field)?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(text) = self.string(item, field) else {
                ok = false;
                continue;
            };
            if text.is_empty() {
                self.err(item.loc, ErrorKind::EmptyValue { field });
                ok = false;
                continue;
            }
            let why = if text.contains('[') || text.contains(']') {
                Some("character classes are not supported; use `*` and `?`")
            } else if map_names && !text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.*?".contains(&b)) {
                Some("map names hold only letters, digits, `_` and `.`")
            } else if map_names && text.bytes().filter(|b| *b != b'*').count() > MAP_NAME_LEN {
                Some("longer than 15 bytes: the kernel keeps only the first 15 bytes of a map name")
            } else if !map_names && !text.bytes().all(|b| b.is_ascii_graphic()) {
                Some("contains a space or a non-ASCII or control character")
            } else {
                None
            };
            match why {
                Some(why) => {
                    self.err(item.loc, ErrorKind::InvalidValue { field, value: text, why });
                    ok = false;
                }
                None => out.push(Pattern { text, loc: item.loc }),
            }
        }
        ok.then_some(out)
    }

    fn maps(&mut self, node: &Node) -> Option<MapRule> {
        let f = self.fields(node, "maps", MAP_FIELDS)?;
        let write = match f.get("write") {
            Some(n) => self.keyword(n, "maps.write", &MapWrite::ALL, MapWrite::name),
            None => Some(MapWrite::Any),
        };
        let named = match f.get("named") {
            Some(n) => self.patterns(n, "maps.named", true),
            None => Some(Vec::new()),
        };
        let pinned = match f.get("pinned") {
            Some(n) => self.keyword(n, "maps.pinned", &[true, false], |b| if b { "allow" } else { "deny" }),
            None => Some(true),
        };
        Some(MapRule { write: write?, named: named?, pinned: pinned? })
    }
}

/// `/a//b/` -> `/a/b`; `/` stays `/`.
pub(crate) fn normalize_path(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}
