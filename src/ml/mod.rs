//! Models, each on its own thread fed by a bounded queue: the runtime never blocks on
//! a forward pass.

pub mod embedder;

pub use embedder::{EmbedError, Embedder};
