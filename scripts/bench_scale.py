#!/usr/bin/env python3
"""Ingestion throughput of one serving node with 0, 1 or 2 remote `ragbox worker`s,
and the cost of the Redis hop per job against the embedded SQLite queue.

Each setup starts `ragbox serve` on a fresh data dir (and the workers), uploads every
file of DIR to a new tenant, and times the run from the first upload until every
document is ready. Redis is the one at --redis, under a key prefix of the run's own.

    scripts/bench_scale.py --binary target/release/ragbox DIR [--redis redis://127.0.0.1:6379]
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

TOKEN = "bench-operator-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait_ready(url, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} never became ready")


def run(args, label, redis, local_workers, workers, files):
    root = pathlib.Path(tempfile.mkdtemp(prefix="ragbox-scale-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"bench-{uuid.uuid4().hex}"
    config = f"""[server]
bind = "127.0.0.1:{port}"
[storage]
data_dir = "{root / 'data'}"
[auth]
admin_token = "{TOKEN}"
[models]
embedding_dir = "{args.models / 'all-MiniLM-L6-v2'}"
generation_file = "{args.models / 'SmolLM2-135M-Instruct' / 'SmolLM2-135M-Instruct.Q4_1.gguf'}"
[log]
level = "warn"
[jobs]
local_workers = {local_workers}
[worker]
bind = "127.0.0.1:0"
server_url = "{base}"
"""
    if redis:
        config += f'[redis]\nurl = "{args.redis}"\nprefix = "{prefix}"\n'
    path = root / "config.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGBOX")}
    procs = [subprocess.Popen([args.binary, "--config", str(path), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_ready(f"{base}/health/ready")
        for _ in range(workers):
            procs.append(subprocess.Popen([args.binary, "--config", str(path), "worker"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3 if workers else 0)  # the workers load their model
        call("POST", f"{base}/api/v1/admin/tenants", TOKEN, {"slug": "bench"})
        key = call("POST", f"{base}/api/v1/admin/tenants/bench/keys", TOKEN,
                   {"name": "bench"})["key"]
        started = time.time()
        for f in files:
            call("POST", f"{base}/api/v1/documents", key,
                 {"title": f.name, "text": f.read_text(errors="replace")})
        while True:
            page = call("GET", f"{base}/api/v1/documents?limit=1000", key)
            items = page["items"]
            states = [d["status"] for d in items]
            if all(s in ("ready", "failed") for s in states) and len(items) == len(files):
                break
            time.sleep(0.1)
        took = time.time() - started
        chunks = sum(d["chunk_count"] for d in items)
        failed = states.count("failed")
        print(f"{label:<44} {len(files):>5} docs {chunks:>6} chunks {took:>7.1f} s "
              f"{chunks / took:>6.1f} chunks/s {took / len(files) * 1000:>7.1f} ms/doc"
              f"{f'  {failed} FAILED' if failed else ''}", flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=pathlib.Path)
    p.add_argument("--binary", default="target/release/ragbox")
    p.add_argument("--models", type=pathlib.Path, default=pathlib.Path("models").resolve())
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--tiny", type=int, default=200,
                   help="one-line documents for the per-job overhead (0: skip)")
    args = p.parse_args()
    files = sorted(f for f in args.dir.rglob("*") if f.is_file())
    tiny_dir = pathlib.Path(tempfile.mkdtemp(prefix="ragbox-tiny-"))
    for i in range(args.tiny):
        (tiny_dir / f"t{i}.txt").write_text(f"Short note number {i} about item {i * 7919}.")
    tiny = sorted(tiny_dir.iterdir())
    setups = [
        ("embedded SQLite queue, 1 local runner", False, 1, 0),
        ("Redis queue, 1 local runner", True, 1, 0),
        ("Redis queue, 0 local, 1 remote worker", True, 0, 1),
        ("Redis queue, 0 local, 2 remote workers", True, 0, 2),
    ]
    for _ in range(args.runs):
        for label, redis, local, workers in setups:
            run(args, label, redis, local, workers, files)
        if tiny:
            for label, redis, local, workers in setups[:3]:
                run(args, f"tiny: {label}", redis, local, workers, tiny)


if __name__ == "__main__":
    main()
