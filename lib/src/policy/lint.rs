//! Warnings about policies that parse but likely do not say what was meant.

use super::eval::cgroup_within;
use super::schema::{Action, Loc, Policy, Rule, SubjectMatch};
use super::{PolicyWarning, WarningKind};

pub(crate) fn lint(p: &Policy) -> Vec<PolicyWarning> {
    let mut out: Vec<(Loc, WarningKind)> = Vec::new();
    for (j, rule) in p.rules.iter().enumerate() {
        // First match wins, so a rule is dead when an earlier rule matches a superset of its subjects.
        if let Some(earlier) = p.rules.iter().take(j).find(|i| covers(&i.subject, &rule.subject)) {
            out.push((
                rule.loc,
                WarningKind::Unreachable {
                    rule: rule.name.clone(),
                    shadowed_by: earlier.name.clone(),
                    shadowed_by_line: earlier.loc.line,
                },
            ));
        }
        if rule.action == Action::Deny && rule.has_constraints() {
            out.push((rule.loc, WarningKind::ConstraintsOnDeny { rule: rule.name.clone() }));
        }
        empty_lists(rule, &mut out);
        let patterns = rule.attach_targets.iter().flatten().chain(rule.maps.named.iter());
        for pat in patterns {
            if let Err(why) = pat.kernel_form() {
                out.push((pat.loc, WarningKind::NotKernelExpressible { pattern: pat.text.clone(), why }));
            }
        }
    }
    out.sort_by_key(|(loc, _)| *loc);
    out.into_iter()
        .map(|(loc, what)| PolicyWarning { file: p.file.clone(), line: loc.line, column: loc.column, what })
        .collect()
}

fn empty_lists(rule: &Rule, out: &mut Vec<(Loc, WarningKind)>) {
    if rule.action == Action::Deny {
        return;
    }
    if rule.prog_types.as_ref().is_some_and(Vec::is_empty) {
        out.push((rule.loc, WarningKind::EmptyList { field: "prog_types" }));
    }
    if rule.attach_targets.as_ref().is_some_and(Vec::is_empty) {
        out.push((rule.loc, WarningKind::EmptyList { field: "attach_targets" }));
    }
}

/// Whether every subject `b` matches is also matched by `a`.
pub(crate) fn covers(a: &SubjectMatch, b: &SubjectMatch) -> bool {
    // Every executable b names is one of a's (a without exe matches any).
    let exe = a.exe.is_empty() || (!b.exe.is_empty() && b.exe.iter().all(|y| a.exe.iter().any(|x| x.value == y.value)));
    let uid = match (&a.uid, &b.uid) {
        (None, _) => true,
        (Some(x), Some(y)) => x.value == y.value,
        (Some(_), None) => false,
    };
    let cgroup = match (&a.cgroup, &b.cgroup) {
        (None, _) => true,
        (Some(x), Some(y)) => cgroup_within(&y.value, &x.value),
        (Some(_), None) => false,
    };
    exe && uid && cgroup
}
