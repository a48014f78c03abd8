//! Black-box tests: each starts the real server on 127.0.0.1:0 with a temporary data
//! dir, through the same startup code as `ragbox serve`, and talks HTTP to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../helpers/mod.rs"]
mod helpers;

mod admin;
mod agents;
mod auth;
mod chat;
mod embedding;
mod errors;
mod generation;
mod health;
mod hostile;
mod knowledge;
mod metrics;
mod openai;
mod openapi;
mod probes;
mod process;
mod qdrant;
mod recovery;
mod scale;
mod upstream;
mod vectors;
