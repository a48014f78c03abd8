//! The long tests: each keeps every core busy for a while (a 20,000-vector graph,
//! llama.cpp's server, a 400-token answer). In a binary of their own, after the short
//! ones, so that they do not starve them; and here one at a time, so that they do not
//! starve each other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../helpers/mod.rs"]
mod helpers;

mod contract;
mod generations;
mod llama;
mod vectors;

/// Held for the whole of each long test, so that they run one at a time.
pub fn one_at_a_time() -> &'static tokio::sync::Mutex<()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    &ONE
}
