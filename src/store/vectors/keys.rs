//! How vectors are laid out in sled: one tree per tenant; a key is the document id, a
//! zero byte and the chunk id (big-endian, so a document's keys sort together); a value
//! is the vector's little-endian f32s.

use super::VectorError;
use crate::domain::TenantId;

/// The sled tree that holds a tenant's vectors.
pub(super) fn tree_name(tenant: &TenantId) -> String {
    format!("vectors/{tenant}")
}

/// The key of one vector.
pub(super) fn key(document: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(document.len() + 9);
    k.extend_from_slice(document.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The prefix every key of a document starts with.
fn doc_prefix(document: &str) -> Vec<u8> {
    let mut k = document.as_bytes().to_vec();
    k.push(0);
    k
}

/// A key's document and chunk id; `None` for a key not made by [`key`].
pub(super) fn split_key(k: &[u8]) -> Option<(&str, u64)> {
    if k.len() < 9 {
        return None;
    }
    let (doc, rest) = k.split_at(k.len() - 9);
    let id = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(doc).ok()?, id))
}

/// Stages the removal of every stored vector of a document (also those left by an
/// interrupted run) and returns their ids.
pub(super) fn stage_removal(
    tree: &sled::Tree,
    document: &str,
    batch: &mut sled::Batch,
) -> Result<Vec<u64>, VectorError> {
    let mut ids = Vec::new();
    for k in tree.scan_prefix(doc_prefix(document)).keys() {
        let k = k?;
        if let Some((_, id)) = split_key(&k) {
            ids.push(id);
        }
        batch.remove(k);
    }
    Ok(ids)
}

/// A vector as a stored value.
pub(super) fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Appends a stored value's floats to `out`.
pub(super) fn decode(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}
