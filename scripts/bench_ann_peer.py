#!/usr/bin/env python3
"""`ragbox bench ann` beside hnswlib on the same .npy files (from make_ann_data.py), in
one run, alternating, so both see the same machine state. Each round runs hnswlib and
then ragbox as child processes; each prints build time, memory, and QPS / recall@k per
ef with one query per call on one thread.

    python3 -m venv .venv-ann && .venv-ann/bin/pip install numpy hnswlib==0.8.0
    .venv-ann/bin/python scripts/bench_ann_peer.py DATA_DIR --ragbox target/release/ragbox \
        [--rounds 2] [--ef 16,32,64,128] [--m 16] [--ef-construction 200] [--threads 2] \
        [--precision f32,f16,int8]

hnswlib uses its inner-product space: the vectors are unit length, so that is their
cosine, and it is the same comparison ragbox makes.
"""
import argparse
import os
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def hnswlib_run(a) -> None:
    import hnswlib
    import numpy as np

    base = np.load(os.path.join(a.data, "base.npy"))
    queries = np.load(os.path.join(a.data, "queries.npy"))
    truth = np.load(os.path.join(a.data, "truth.npy"))
    k = a.k
    before = rss_mb()
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=base.shape[1])
    index.init_index(max_elements=base.shape[0], M=a.m, ef_construction=a.ef_construction, random_seed=100)
    index.add_items(base, np.arange(base.shape[0]), num_threads=a.threads)
    built = time.perf_counter() - started
    print(
        f"hnswlib build: {base.shape[0]} x {base.shape[1]}, M {a.m}, ef_construction "
        f"{a.ef_construction}, {a.threads} threads: {built:.2f} s; RSS +{rss_mb() - before:.1f} MiB"
    )
    index.set_num_threads(1)
    for ef in a.ef:
        index.set_ef(max(ef, k))
        hits = 0
        started = time.perf_counter()
        for q in range(queries.shape[0]):
            labels, _ = index.knn_query(queries[q : q + 1], k=k)
            hits += len(set(labels[0].tolist()) & set(truth[q, :k].tolist()))
        secs = time.perf_counter() - started
        print(
            f"  hnswlib ef {ef:>4}: {queries.shape[0] / secs:>8.0f} QPS (one thread), "
            f"recall@{k} {hits / (queries.shape[0] * k):.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--ragbox", default="target/release/ragbox")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ef", default="16,32,64,128")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--only-hnswlib", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.ef = [int(x) for x in a.ef.split(",")]
    if a.only_hnswlib:
        hnswlib_run(a)
        return
    peer = [sys.executable, __file__, a.data, "--only-hnswlib", "--ef", ",".join(map(str, a.ef)),
            "--k", str(a.k), "--m", str(a.m), "--ef-construction", str(a.ef_construction),
            "--threads", str(a.threads)]
    ours = [a.ragbox, "bench", "ann"] + [
        f"--{n}={os.path.join(a.data, n + '.npy')}" for n in ("base", "queries", "truth")
    ] + ["--ef", ",".join(map(str, a.ef)), "--k", str(a.k), "--m", str(a.m),
         "--ef-construction", str(a.ef_construction), "--threads", str(a.threads),
         "--precision", a.precision]
    for r in range(a.rounds):
        for name, cmd in (("hnswlib", peer), ("ragbox", ours)):
            print(f"== round {r + 1}: {name}", flush=True)
            subprocess.run(cmd, check=True)
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            print(f"   (children's peak RSS so far {usage.ru_maxrss / 1024:.0f} MiB)", flush=True)


if __name__ == "__main__":
    main()
