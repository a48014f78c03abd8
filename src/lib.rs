//! ragbox: a self-hosted, multi-tenant RAG appliance in one binary.
//!
//! The crate is a library so that the integration tests drive the same code as the
//! binary; `main.rs` only dispatches the command line.

// A dependency nothing uses is a warning (an error under CI's -D warnings).
#![warn(unused_crate_dependencies)]
// The binary's global allocator (src/main.rs); the library only asks it to give memory
// back (`memory`).
use mimalloc as _;
// A dev-dependency of the integration tests (tests/), which the unit tests also see.
#[cfg(test)]
use flate2 as _;

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod llm;
pub mod memory;
pub mod ml;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod text;
