//! Text handling for ingestion: extraction from uploaded files (in a sandboxed child
//! process) and chunking.

pub mod chunker;
pub mod extract;
pub mod sandbox;
