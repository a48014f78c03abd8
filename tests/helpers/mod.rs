//! Helpers shared by the test binaries (`tests/it`, the many short tests, and
//! `tests/long`, the few that take all the cores for a while), one file per concern.
//! Each binary includes this folder with `#[path = "../helpers/mod.rs"] mod helpers;`.

// Each binary compiles its own copy and uses only part of it (re-exports included);
// what one binary leaves unused is used by the other.
#![allow(dead_code, unused_imports)]

pub mod binary;
pub mod chat;
pub mod eventually;
pub mod log;
pub mod models;
pub mod pdf;
pub mod prometheus;
pub mod redis;
pub mod server;
pub mod tenant;
pub mod upstream;
pub mod vectors;

pub use eventually::eventually;
pub use models::{int8_embedder, shared_embedder, tiny_queue_embedder};
pub use pdf::pdf_of;
pub use server::{ADMIN_TOKEN, TestApp, error_code};
pub use tenant::Tenant;
