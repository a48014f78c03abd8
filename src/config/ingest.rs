//! How a document becomes chunks: size limits, text extraction in a child process,
//! and chunking.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Document settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Largest document accepted, in bytes (413 above it).
    pub max_bytes: u64,
    /// A document cut into more chunks than this fails.
    pub max_chunks: usize,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_chunks: 20_000,
        }
    }
}

/// Limits on the child process (`ragbox extract`) that reads each document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionConfig {
    /// The ragbox executable run as `<program> extract`; this one when unset.
    pub program: Option<PathBuf>,
    /// Address space of the child, in MiB; a document that needs more fails.
    pub memory_mb: u64,
    /// CPU seconds the child may use.
    pub cpu_secs: u64,
    /// Wall-clock seconds before the child is killed.
    pub timeout_secs: u64,
    /// Extracted text may be at most this many times the document's size …
    pub max_text_ratio: u64,
    /// … and never more than this many bytes.
    pub max_text_bytes: u64,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        Self {
            program: None,
            memory_mb: 2048,
            cpu_secs: 60,
            timeout_secs: 120,
            max_text_ratio: 100,
            max_text_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ExtractionConfig {
    /// The most text a document of `input_bytes` may yield: a multiple of its size
    /// (but at least 64 KiB, for small files), never above the absolute maximum.
    pub fn text_cap(&self, input_bytes: u64) -> u64 {
        input_bytes
            .saturating_mul(self.max_text_ratio)
            .max(64 * 1024)
            .min(self.max_text_bytes)
    }
}

/// Chunking settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingConfig {
    /// Tokens per chunk, at most.
    pub max_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}
