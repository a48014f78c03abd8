//! Models, each on its own thread fed by a bounded queue: the runtime never blocks on
//! a forward pass.

mod amx;
pub mod bert;
pub mod embedder;
mod flash;
mod gemm;
pub mod generator;
mod int8;
pub mod llama;
mod mapped;
pub mod meters;
mod nibbles;
mod ops;
mod panels;
mod pool;
mod widen;

pub use embedder::{EmbedError, Embedder};
pub use generator::Generator;
pub use meters::{EmbedMeters, GenMeters};
