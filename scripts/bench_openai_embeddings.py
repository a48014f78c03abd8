"""Benchmarks ragbox's POST /v1/embeddings as OpenAI clients call it.

Two loads against a running server, each after a warm-up:
  single: CLIENTS concurrent clients, each sending one short text per request, for
          SECONDS; reports requests/s and p50/p99 latency;
  batch:  one client sending batches of 64 texts; reports inputs/s.

Uses only the standard library (one keep-alive HTTP connection per client thread).

  python3 scripts/bench_openai_embeddings.py --url http://127.0.0.1:8080 --key rbx_… \
      [--clients 16] [--seconds 20] [--model all-MiniLM-L6-v2]
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

SENTENCES = [
    "How long do customers have to return an item?",
    "The warehouse ships orders every weekday before noon.",
    "Refunds are paid to the original payment method.",
    "Our support team answers within one business day.",
    "Invoices are sent by email at the end of each month.",
    "The API rate limit is sixty requests per minute.",
    "Passwords must be at least twelve characters long.",
    "Backups run nightly and are kept for thirty days.",
]


class Client:
    def __init__(self, url, key, model):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.model = model

    def embed(self, texts):
        body = json.dumps({"model": self.model, "input": texts})
        self.conn.request("POST", "/v1/embeddings", body=body, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {data[:200]!r}")
        return json.loads(data)


def single(args):
    latencies, errors, stop = [], [], time.monotonic() + args.seconds
    lock = threading.Lock()

    def run(i):
        c = Client(args.url, args.key, args.model)
        n = i
        mine = []
        while time.monotonic() < stop:
            text = SENTENCES[n % len(SENTENCES)] + f" ({n})"
            n += args.clients
            t0 = time.perf_counter()
            try:
                c.embed(text)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(
        f"single, {args.clients} clients: {len(latencies) / elapsed:.0f} req/s, "
        f"p50 {p(0.50):.1f} ms, p99 {p(0.99):.1f} ms, {len(errors)} errors"
    )
    if errors:
        print("  first error:", errors[0])


def batch(args):
    c = Client(args.url, args.key, args.model)
    texts = [SENTENCES[i % len(SENTENCES)] + f" ({i})" for i in range(64)]
    done, stop, t0 = 0, time.monotonic() + args.seconds, time.perf_counter()
    while time.monotonic() < stop:
        out = c.embed(texts)
        assert len(out["data"]) == 64
        done += 64
    elapsed = time.perf_counter() - t0
    print(f"batches of 64, 1 client: {done / elapsed:.0f} inputs/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    Client(args.url, args.key, args.model).embed(SENTENCES)  # warm-up
    single(args)
    batch(args)


if __name__ == "__main__":
    main()
