//! bpfgate's integration tests: one binary, a module per concern.

mod cli;
mod corpus;
mod evasion;
mod fixtures;
mod kubernetes;
mod limits;
mod loaders;
mod packaging;
mod policy_cli;
mod readme;
mod real_world;
mod support;
