//! The tokenizer of a GGUF, built from its own `tokenizer.ggml.*` metadata (byte-level
//! BPE: tokens, merges and token types) so no `tokenizer.json` has to ship beside it.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;

/// Builds a byte-level BPE tokenizer from `tokenizer.ggml.*` metadata.
pub(super) fn gguf_tokenizer(content: &gguf_file::Content) -> Result<Tokenizer, String> {
    let md = &content.metadata;
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("");
    if model != "gpt2" {
        return Err(format!(
            "tokenizer model `{model}` is not supported (byte-level BPE, `gpt2`, is)"
        ));
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        md.get(key)
            .ok_or_else(|| format!("{key} is missing"))?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type").map(|v| v.to_vec()) {
        Some(Ok(list)) => list.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // Control (3) and user-defined (4) tokens are matched whole, never split.
    let added: Vec<serde_json::Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(id, t)| {
            serde_json::json!({
                "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *t == 3,
            })
        })
        .collect();
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("default");
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
    });
    // SmolLM's pre-tokenizer splits digits one by one before the byte-level split.
    let pre_tokenizer = if pre == "smollm" {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level,
        ]})
    } else {
        byte_level.clone()
    };
    let spec = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    spec.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| e.to_string())
}
