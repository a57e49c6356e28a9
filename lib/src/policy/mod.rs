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
    /// The policy file, as named to the parser.
    pub file: String,
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based.
    pub column: u32,
    /// What is wrong.
    pub what: ErrorKind,
}

/// Every error found in one policy file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyError>);

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorKind {
    /// The text is not YAML.
    #[error("YAML syntax: {message}")]
    Syntax {
        /// What the YAML parser said.
        message: String,
    },
    /// The file has no document.
    #[error("the policy file is empty")]
    Empty,
    /// The file has more than one document.
    #[error("a policy file holds one YAML document, found another one here")]
    MultipleDocuments,
    /// Nesting is too deep.
    #[error("nesting deeper than {max_depth} levels")]
    TooDeep {
        /// The nesting limit.
        max_depth: usize,
    },
    /// Aliases expand the document too much.
    #[error("the document expands to more than {max_nodes} nodes (aliases)")]
    TooLarge {
        /// The node limit.
        max_nodes: usize,
    },
    /// A value of the wrong type.
    #[error("{context}: expected {expected}, found {found}")]
    WrongType {
        /// Where: the mapping being read.
        context: String,
        /// What is expected there.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A field the schema does not have.
    #[error("unknown field `{field}` in {context}; expected one of: {expected}")]
    UnknownField {
        /// The field.
        field: String,
        /// Where: the mapping being read.
        context: &'static str,
        /// What is expected there.
        expected: &'static str,
    },
    /// A key given twice.
    #[error("duplicate key `{key}`")]
    DuplicateKey {
        /// The duplicated key.
        key: String,
    },
    /// A required field is missing.
    #[error("missing field `{field}` in {context}")]
    MissingField {
        /// The field.
        field: &'static str,
        /// Where: the mapping being read.
        context: &'static str,
    },
    /// A policy version this bpfgate does not read.
    #[error("unsupported policy version {version}; this bpfgate reads version {supported}")]
    UnsupportedVersion {
        /// The version the file asks for.
        version: String,
        /// The version this bpfgate reads.
        supported: u32,
    },
    /// A capability class name the library does not know.
    #[error("unknown capability class `{name}`; known classes: {known}")]
    UnknownCapability {
        /// The name as written.
        name: String,
        /// The names known.
        known: String,
    },
    /// A program type name the kernel does not have.
    #[error("unknown program type `{name}` (kernel names without BPF_PROG_TYPE_, lower case, e.g. `kprobe`)")]
    UnknownProgType {
        /// The name as written.
        name: String,
    },
    /// An attach type name the kernel does not have.
    #[error("unknown attach type `{name}` (kernel names without BPF_, lower case, e.g. `trace_fentry`)")]
    UnknownAttachType {
        /// The name as written.
        name: String,
    },
    /// A keyword that is not one of its field's values.
    #[error("unknown {what} `{name}`; expected one of: {expected}")]
    UnknownKeyword {
        /// What is counted or named.
        what: &'static str,
        /// The name as written.
        name: String,
        /// What is expected there.
        expected: &'static str,
    },
    /// A class both allowed and denied.
    #[error("capability class `{class}` is both allowed and denied")]
    Contradiction {
        /// The class.
        class: String,
    },
    /// Two rules with one name.
    #[error("rule name `{name}` is already used by the rule at line {first_line}")]
    DuplicateRuleName {
        /// The name as written.
        name: String,
        /// The line of the rule that has the name first.
        first_line: u32,
    },
    /// A value that must not be empty.
    #[error("`{field}` must not be empty")]
    EmptyValue {
        /// The field.
        field: &'static str,
    },
    /// A value that is malformed.
    #[error("{field} `{value}`: {why}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value as written.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// An integer out of range.
    #[error("{field} must be an integer from {min} to {max}, found `{value}`")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value as written.
        value: String,
        /// The smallest value accepted.
        min: u64,
        /// The limit.
        max: u64,
    },
    /// A pattern the gate cannot compare.
    #[error("pattern `{pattern}` cannot be compiled for the kernel: {why}")]
    NotKernelExpressible {
        /// The pattern.
        pattern: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// More entries than the gate's tables hold.
    #[error("{what}: {count} exceeds the kernel gate's limit of {max}")]
    LimitExceeded {
        /// What is counted or named.
        what: &'static str,
        /// How many the policy has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// A policy that works but probably not as its author meant, at `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{file}:{line}:{column}: warning: {what}")]
pub struct PolicyWarning {
    /// The policy file, as named to the parser.
    pub file: String,
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based.
    pub column: u32,
    /// What is probably wrong.
    pub what: WarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
/// None
pub enum WarningKind {
    /// A rule that never decides: an earlier one matches every subject it matches.
    #[error(
        "rule `{rule}` is unreachable: rule `{shadowed_by}` (line {shadowed_by_line}) comes first and matches \
         every subject it matches"
    )]
    Unreachable {
        /// The rule's name.
        rule: String,
        /// The earlier rule that matches first.
        shadowed_by: String,
        /// Its line.
        shadowed_by_line: u32,
    },
    /// Program constraints on a rule that denies everything.
    #[error("rule `{rule}` denies every program of its subject; its program constraints have no effect")]
    ConstraintsOnDeny {
        /// The rule's name.
        rule: String,
    },
    /// An empty list that allows nothing.
    #[error("`{field}` is an empty list: the rule allows no program")]
    EmptyList {
        /// The field.
        field: &'static str,
    },
    /// A pattern the gate cannot compare.
    #[error("pattern `{pattern}` cannot be compiled for the kernel: {why}")]
    NotKernelExpressible {
        /// The pattern.
        pattern: String,
        /// Why it is refused.
        why: &'static str,
    },
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
