//! Text handling for ingestion: extraction from uploaded files and chunking.

pub mod chunker;
pub mod extract;
