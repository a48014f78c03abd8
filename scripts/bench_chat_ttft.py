#!/usr/bin/env python3
"""Time to first token of a grounded chat against a running `ragbox serve`.

Creates a tenant (with the operator token), uploads the given text files as its
documents, waits until they are ready, then streams the same question N times through
`POST /api/v1/chat/stream` and reports when the sources event and the first text piece
arrived, and when the answer ended. Standard library only; never a runtime dependency.

    scripts/bench_chat_ttft.py --server http://127.0.0.1:8080 --admin-token-file data/admin.token \
        --question "How do I list files sorted by size?" FILE [FILE ...]
"""
import argparse
import json
import statistics
import time
import urllib.request
import uuid


def call(server, method, path, token, body=None, content_type="application/json"):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read() or b"null")


def upload(server, key, path):
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        content = f.read()
    name = path.rsplit("/", 1)[-1]
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return call(server, "POST", "/api/v1/documents/upload", key, body,
                f"multipart/form-data; boundary={boundary}")


def stream(server, key, question, max_tokens):
    body = json.dumps({
        "messages": [{"role": "user", "content": question}],
        "temperature": 0, "max_tokens": max_tokens,
    }).encode()
    req = urllib.request.Request(server + "/api/v1/chat/stream", data=body, method="POST")
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    sources = first = None
    n_sources = 0
    with urllib.request.urlopen(req, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            now = time.perf_counter() - start
            if payload == "[DONE]":
                return sources, first, now, n_sources
            event = json.loads(payload)
            if "sources" in event and sources is None:
                sources, n_sources = now, len(event["sources"])
            elif "text" in event and first is None:
                first = now
            elif "error" in event:
                raise RuntimeError(event["error"])
    raise RuntimeError("stream ended without [DONE]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--server", default="http://127.0.0.1:8080")
    ap.add_argument("--admin-token-file", default="data/admin.token")
    ap.add_argument("--question", default="How do I list files sorted by size?")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    admin = open(a.admin_token_file).read().strip()
    slug = "ttft-" + uuid.uuid4().hex[:8]
    call(a.server, "POST", "/api/v1/admin/tenants", admin, {"slug": slug, "name": slug})
    key = call(a.server, "POST", f"/api/v1/admin/tenants/{slug}/keys", admin,
               {"name": "bench", "scopes": ["read", "write"]})["key"]
    ids = [upload(a.server, key, f)["id"] for f in a.files]
    while True:
        states = [call(a.server, "GET", f"/api/v1/documents/{i}", key)["status"] for i in ids]
        if all(s == "ready" for s in states):
            break
        if any(s == "failed" for s in states):
            raise RuntimeError(f"a document failed: {states}")
        time.sleep(0.5)
    firsts = []
    for run in range(a.runs):
        sources, first, done, n = stream(a.server, key, a.question, a.max_tokens)
        firsts.append(first)
        print(f"run {run + 1}: {n} sources after {sources * 1000:.0f} ms; first text after "
              f"{first * 1000:.0f} ms; answer done after {done * 1000:.0f} ms")
    answer = call(a.server, "POST", "/api/v1/chat", key, {
        "messages": [{"role": "user", "content": a.question}],
        "temperature": 0, "max_tokens": a.max_tokens,
    })
    print(f"usage: {answer['usage']}; sources: "
          + ", ".join(f"{s['title']}#{s['chunk_index']}" for s in answer["sources"]))
    print(f"time to first token: median {statistics.median(firsts) * 1000:.0f} ms "
          f"(min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f}) over {a.runs} runs")


if __name__ == "__main__":
    main()
