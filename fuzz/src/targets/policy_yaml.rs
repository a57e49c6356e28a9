//! `policy_yaml`: arbitrary bytes, as UTF-8 (invalid sequences replaced), as a policy file through `Policy::parse`,
//! `Policy::lint` and `compiled::compile`.
//!
//! Properties:
//! * parsing never panics, nor overflows the stack or runs away on nesting and alias bombs (the parser's depth
//!   and node budgets turn them into errors), and it is deterministic;
//! * a failed parse has at least one error, sorted by position, each naming this file and a line and column
//!   inside the input: line from 1 to the number of lines plus 1 (lines end at YAML line breaks: `\n`, `\r\n`,
//!   a lone `\r`; saphyr puts some end-of-input errors on the line after the last, even without a final break),
//!   column from 1 to that line's length in characters plus 1 (so 1 on the line after the last); on a line that
//!   starts with `%` (a directive), its length in bytes plus 1, as saphyr-parser 0.3.3 counts a reserved
//!   directive's parameters in bytes (`regressions/policy_yaml/column-in-bytes-reserved-directive`); every
//!   diagnostic formats;
//! * on what parses: `lint` never panics and its warnings are located the same way; `compile` either fails with
//!   errors located the same way, or gives a policy that passes `validate`, keeps one record per rule, survives
//!   CBOR (equal value, stable bytes) and the fixed-size record encodings;
//! * differential: for the programs of `tests/policy/eval/programs.json` (plus a few variants, see
//!   `crate::policy::programs`) and for fixed subjects plus subjects built from the first rules' own
//!   subject fields, the compiled evaluation (`compiled::evaluate` on the tables resolved by a collision-free
//!   host) gives the source evaluation's decision, matched rule (index and name) and reason kinds: the unit
//!   proptest's property, on fuzzer-made policies.

use crate::policy::{check_round_trips, differential, fixed_subjects, subjects_for, Stats};
use bpfgate::policy::{compiled, Decision, Policy};

const FILE: &str = "fuzz.yaml";

static STATS: Stats = Stats::new(
    "policy_yaml",
    &["inputs", "parsed", "compiled", "verdicts by a rule", "by the default", "allow", "deny", "audit"],
);

/// Rules whose subjects become test subjects (three each).
const SUBJECT_RULES: usize = 8;

/// The greatest column on each line: its length in characters plus 1, or in bytes plus 1 on a directive line
/// (see the properties), split at YAML line breaks, then column 1 on the line after the last: the positions a
/// diagnostic may name.
fn max_columns(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut chars, mut bytes, mut directive) = (0, 0, false);
    let mut it = text.chars().peekable();
    let end_line = |out: &mut Vec<usize>, chars: &mut usize, bytes: &mut usize, directive: &mut bool| {
        out.push(if *directive { *bytes } else { *chars } + 1);
        (*chars, *bytes, *directive) = (0, 0, false);
    };
    while let Some(c) = it.next() {
        match c {
            '\n' => end_line(&mut out, &mut chars, &mut bytes, &mut directive),
            '\r' => {
                if it.peek() == Some(&'\n') {
                    it.next();
                }
                end_line(&mut out, &mut chars, &mut bytes, &mut directive)
            }
            _ => {
                directive |= chars == 0 && c == '%';
                chars += 1;
                bytes += c.len_utf8();
            }
        }
    }
    // The last line, unless the text ends with a break (or is empty); then the line after it.
    if chars > 0 {
        end_line(&mut out, &mut chars, &mut bytes, &mut directive);
    }
    out.push(1);
    out
}

fn check_located(max_columns: &[usize], line: u32, column: u32, what: &dyn std::fmt::Display) {
    let max = usize::try_from(line).ok().filter(|&l| l >= 1).and_then(|l| max_columns.get(l - 1));
    let Some(&max) = max else {
        panic!("{line}:{column}: line outside the input ({} lines): {what}", max_columns.len() - 1);
    };
    assert!(column >= 1 && column as usize <= max, "{line}:{column}: column outside the line (at most {max}): {what}");
}

fn check_errors(max_columns: &[usize], errors: &bpfgate::policy::PolicyErrors) {
    assert!(!errors.0.is_empty(), "an Err without errors");
    for e in &errors.0 {
        assert_eq!(e.file, FILE);
        check_located(max_columns, e.line, e.column, e);
    }
    assert!(errors.0.windows(2).all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)), "errors not sorted");
    let _ = errors.to_string();
}

/// Runs the properties on one input; a violated property panics.
pub fn check(data: &[u8]) {
    STATS.hit(0);
    let text = String::from_utf8_lossy(data);
    let parsed = Policy::parse(FILE, &text);
    assert_eq!(Policy::parse(FILE, &text), parsed, "parse is not deterministic");
    let cols = max_columns(&text);
    let policy = match parsed {
        Ok(p) => p,
        Err(errors) => {
            check_errors(&cols, &errors);
            return;
        }
    };
    STATS.hit(1);
    assert_eq!(policy.file, FILE);
    for w in policy.lint() {
        assert_eq!(w.file, FILE);
        check_located(&cols, w.line, w.column, &w);
    }
    let c = match compiled::compile(&policy, 7) {
        Ok(c) => c,
        Err(errors) => {
            check_errors(&cols, &errors);
            return;
        }
    };
    STATS.hit(2);
    c.validate(FILE).expect("a compiled policy validates");
    assert_eq!(c.rules.len(), policy.rules.len(), "one record per rule");
    assert_eq!(c.header.generation, 7);
    check_round_trips(&c);
    let mut subjects = fixed_subjects();
    let keys = policy.rules.iter().take(SUBJECT_RULES).map(|r| {
        let s = &r.subject;
        (
            s.exe.first().map(|e| e.value.clone()),
            s.cgroup.as_ref().map(|g| g.value.clone()),
            s.uid.as_ref().map(|u| u.value),
        )
    });
    subjects_for(&mut subjects, keys);
    differential(&policy, &c, &subjects, |v| {
        STATS.hit(if v.rule.is_some() { 3 } else { 4 });
        STATS.hit(match v.decision {
            Decision::Allow => 5,
            Decision::Deny => 6,
            Decision::Audit => 7,
        });
    });
}
