#!/usr/bin/env python3
"""Writes base.npy, queries.npy and truth.npy for `ragbox bench ann` (and for hnswlib or
faiss on identical data): clustered, L2-normalised float32 vectors like sentence
embeddings (topics with points around them), and exact cosine top-100 neighbours.

    python3 scripts/make_ann_data.py OUT_DIR [--n 100000] [--queries 1000] [--dim 384]
"""
import argparse
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--topics", type=int, default=1000)
    a = ap.parse_args()
    rng = np.random.default_rng(2026)
    centers = rng.uniform(-0.5, 0.5, (a.topics, a.dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def points(n):
        c = centers[rng.integers(0, a.topics, n)]
        p = c + 0.15 * rng.uniform(-0.5, 0.5, (n, a.dim)).astype(np.float32)
        return (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)

    base, queries = points(a.n), points(a.queries)
    sims = queries @ base.T
    truth = np.argsort(-sims, axis=1)[:, :100].astype(np.int64)
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "base.npy"), base)
    np.save(os.path.join(a.out, "queries.npy"), queries)
    np.save(os.path.join(a.out, "truth.npy"), truth)
    print(f"wrote {a.n} base, {a.queries} queries, truth top-100 to {a.out}")


if __name__ == "__main__":
    main()
