//! Load policy: which subjects may load which programs, decided from capability metadata (issue 3).
//!
//! A policy is a YAML file (schema in `docs/policy.md`). [`Policy::parse`] reads it into [`Policy`], with every
//! error located by file, line and column; [`Policy::lint`] finds rules that can never match.
//! [`Policy::evaluate`] decides one program for one [`Subject`] (first matching rule wins) and explains every
//! denial. [`compiled::compile`] lowers the policy to the fixed-size records the in-kernel gate holds in BPF maps;
//! [`compiled::evaluate`] is the gate's algorithm over those records, and gives the same verdicts.

pub mod compiled;
mod eval;
mod lint;
mod parse;
pub mod schema;
mod yaml;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use eval::{reason_bits, Decision, Evidence, MapFacts, MapRefusal, MatchedRule, Reason, Subject, Verdict};
pub use schema::{
    gate_hook, Action, ClassRule, Loc, Located, MapRule, MapWrite, Mode, Pattern, Policy, Rule, SubjectMatch,
};

/// A problem that makes a policy file unusable, at `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{file}:{line}:{column}: error: {what}")]
pub struct PolicyError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub what: ErrorKind,
}

/// Every error found in one policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyError>);

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorKind {
    #[error("YAML syntax: {message}")]
    Syntax { message: String },
    #[error("the policy file is empty")]
    Empty,
    #[error("a policy file holds one YAML document, found another one here")]
    MultipleDocuments,
    #[error("nesting deeper than {max_depth} levels")]
    TooDeep { max_depth: usize },
    #[error("the document expands to more than {max_nodes} nodes (aliases)")]
    TooLarge { max_nodes: usize },
    #[error("{context}: expected {expected}, found {found}")]
    WrongType { context: String, expected: &'static str, found: &'static str },
    #[error("unknown field `{field}` in {context}; expected one of: {expected}")]
    UnknownField { field: String, context: &'static str, expected: &'static str },
    #[error("duplicate key `{key}`")]
    DuplicateKey { key: String },
    #[error("missing field `{field}` in {context}")]
    MissingField { field: &'static str, context: &'static str },
    #[error("unsupported policy version {version}; this bpfgate reads version {supported}")]
    UnsupportedVersion { version: String, supported: u32 },
    #[error("unknown capability class `{name}`; known classes: {known}")]
    UnknownCapability { name: String, known: String },
    #[error("unknown program type `{name}` (kernel names without BPF_PROG_TYPE_, lower case, e.g. `kprobe`)")]
    UnknownProgType { name: String },
    #[error("unknown attach type `{name}` (kernel names without BPF_, lower case, e.g. `trace_fentry`)")]
    UnknownAttachType { name: String },
    #[error("unknown {what} `{name}`; expected one of: {expected}")]
    UnknownKeyword { what: &'static str, name: String, expected: &'static str },
    #[error("capability class `{class}` is both allowed and denied")]
    Contradiction { class: String },
    #[error("rule name `{name}` is already used by the rule at line {first_line}")]
    DuplicateRuleName { name: String, first_line: u32 },
    #[error("`{field}` must not be empty")]
    EmptyValue { field: &'static str },
    #[error("{field} `{value}`: {why}")]
    InvalidValue { field: &'static str, value: String, why: &'static str },
    #[error("{field} must be an integer from {min} to {max}, found `{value}`")]
    OutOfRange { field: &'static str, value: String, min: u64, max: u64 },
    #[error("pattern `{pattern}` cannot be compiled for the kernel: {why}")]
    NotKernelExpressible { pattern: String, why: &'static str },
    #[error("{what}: {count} exceeds the kernel gate's limit of {max}")]
    LimitExceeded { what: &'static str, count: usize, max: usize },
}

/// A policy that works but probably not as its author meant, at `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{file}:{line}:{column}: warning: {what}")]
pub struct PolicyWarning {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub what: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WarningKind {
    #[error(
        "rule `{rule}` is unreachable: rule `{shadowed_by}` (line {shadowed_by_line}) comes first and matches \
         every subject it matches"
    )]
    Unreachable { rule: String, shadowed_by: String, shadowed_by_line: u32 },
    #[error("rule `{rule}` denies every program of its subject; its program constraints have no effect")]
    ConstraintsOnDeny { rule: String },
    #[error("`{field}` is an empty list: the rule allows no program")]
    EmptyList { field: &'static str },
    #[error("pattern `{pattern}` cannot be compiled for the kernel: {why}")]
    NotKernelExpressible { pattern: String, why: &'static str },
}

impl Policy {
    /// Parse and validate a policy. `file` is only used in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyErrors> {
        parse::parse(file, text)
    }

    /// Warnings: unreachable rules, ineffective constraints, patterns the kernel gate cannot express.
    pub fn lint(&self) -> Vec<PolicyWarning> {
        lint::lint(self)
    }

    pub(crate) fn error(&self, loc: Loc, what: ErrorKind) -> PolicyError {
        PolicyError { file: self.file.clone(), line: loc.line, column: loc.column, what }
    }
}
