//! bpfgate's integration tests: one binary, a module per concern.

mod cli;
mod corpus;
mod fixtures;
mod policy_cli;
mod readme;
mod support;
