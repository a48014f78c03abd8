#!/usr/bin/env python3
"""Soak and hostile-queue figures for a release `ragbox` binary (issue: hardening).

1. Starts `ragbox serve` on a fresh data dir, creates a tenant with its own request
   limit lifted, uploads the given text files and waits until they are ready.
2. Soak: `wrk` with 256 connections for N seconds, alternating an authenticated hybrid
   search and `GET /api/v1/tenant`, while a second tenant uploads a document every
   half second. Prints wrk's req/s, latency percentiles and errors, and the server's
   RSS at the start, every `--sample` seconds, at the end and `--settle` seconds later.
3. Hostile queue: a third tenant uploads PDFs whose page tree loops (they spin until
   the CPU limit), then a fourth tenant uploads a normal document; prints how long the
   normal document took to become ready.

Standard library and wrk only; never a runtime dependency of ragbox.

    scripts/bench_soak.py --binary target/release/ragbox --seconds 60 FILE [FILE ...]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ADMIN = "bench-operator-token-0123456789"


def call(base, method, path, token, body=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read() or b"null")


def tenant(base, slug):
    call(base, "POST", "/api/v1/admin/tenants", ADMIN, {"slug": slug})
    call(base, "PUT", f"/api/v1/admin/tenants/{slug}/limits", ADMIN, {"requests_per_minute": 0})
    return call(base, "POST", f"/api/v1/admin/tenants/{slug}/keys", ADMIN, {"name": "bench"})["key"]


def upload(base, key, name, content, mime):
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
        f"Content-Type: {mime}\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return call(base, "POST", "/api/v1/documents/upload", key, raw=body,
                content_type=f"multipart/form-data; boundary={boundary}")["id"]


def wait_ready(base, key, doc, limit=600):
    started = time.time()
    while time.time() - started < limit:
        v = call(base, "GET", f"/api/v1/documents/{doc}", key)
        if v["status"] in ("ready", "failed"):
            return v
        time.sleep(0.02)
    raise SystemExit(f"document {doc} never finished")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def loop_pdf():
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 3 0 R /Contents 4 0 R >>",
        b"<< /Length 36 >>\nstream\nBT /F1 12 Tf 72 720 Td (cycle) Tj ET\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objects):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for o in offsets:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def hostile_queue(base, count):
    hostile_key = tenant(base, "hostile")
    hostile = [upload(base, hostile_key, f"loop{i}.pdf", loop_pdf() + b"%" + str(i).encode(),
                      "application/pdf") for i in range(count)]
    time.sleep(0.5)
    normal_key = tenant(base, "normal")
    started = time.time()
    doc = upload(base, normal_key, "normal.txt",
                 b"A normal document uploaded while hostile ones spin in the queue.", "text/plain")
    v = wait_ready(base, normal_key, doc)
    took = time.time() - started
    print(f"normal document {v['status']} {took * 1000:.0f} ms after upload, "
          f"with {count} looping PDFs of another tenant queued before it")
    for h in hostile:
        d = call(base, "GET", f"/api/v1/documents/{h}", hostile_key)
        print(f"hostile document: {d['status']}, attempts {d['attempts']}, last_error: {d['last_error']}")


WRK_SCRIPT = """
local n = 0
local key = os.getenv("RAGBOX_KEY")
local search = '{"query": "how do I configure the server", "mode": "hybrid", "top_k": 5}'
request = function()
  n = n + 1
  local headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
  if n % 2 == 0 then
    return wrk.format("POST", "/api/v1/search", headers, search)
  end
  return wrk.format("GET", "/api/v1/tenant", headers)
end
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/ragbox")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--hostile", type=int, default=2, help="looping PDFs queued before the normal one")
    ap.add_argument("--skip-soak", action="store_true", help="only the hostile-queue figure")
    ap.add_argument("--sample", type=int, default=30, help="seconds between RSS samples under load")
    ap.add_argument("--settle", type=int, default=30, help="idle seconds before the last RSS reading")
    ap.add_argument("--precision", default="f32", choices=["f32", "int8"],
                    help="the embedder's embedding.precision")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ragbox-soak-")
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nbind = "127.0.0.1:18089"\n[storage]\ndata_dir = "{work}/data"\n'
                f'[auth]\nadmin_token = "{ADMIN}"\n[log]\nlevel = "warn"\n'
                f'[embedding]\nprecision = "{args.precision}"\n')
    server = subprocess.Popen([args.binary, "--config", config, "serve"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:18089"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health/ready", timeout=1)
                break
            except Exception:
                time.sleep(0.05)
        key = tenant(base, "soak")
        docs = [upload(base, key, os.path.basename(p), open(p, "rb").read(), "text/plain")
                for p in args.files]
        chunks = sum(wait_ready(base, key, d)["chunk_count"] for d in docs)
        print(f"corpus: {len(docs)} documents, {chunks} chunks")

        if args.skip_soak:
            return hostile_queue(base, args.hostile)
        uploader_key = tenant(base, "uploader")
        stop = threading.Event()
        uploaded = []

        def uploads():
            i = 0
            while not stop.is_set():
                text = f"Upload {i} during the soak: " + " ".join(f"word{j * i % 977}" for j in range(400))
                uploaded.append(upload(base, uploader_key, f"u{i}.txt", text.encode(), "text/plain"))
                i += 1
                time.sleep(0.5)

        script = os.path.join(work, "soak.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        rss_start = rss_mb(server.pid)
        samples = []

        def sample():
            began = time.monotonic()
            while not stop.wait(args.sample):
                samples.append((time.monotonic() - began, rss_mb(server.pid)))

        threads = [threading.Thread(target=uploads), threading.Thread(target=sample)]
        for t in threads:
            t.start()
        wrk = subprocess.run(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", script, base],
            env=dict(os.environ, RAGBOX_KEY=key), capture_output=True, text=True)
        stop.set()
        for t in threads:
            t.join()
        rss_end = rss_mb(server.pid)
        print(wrk.stdout)
        ready = sum(1 for d in uploaded if wait_ready(base, uploader_key, d)["status"] == "ready")
        print(f"uploads during the soak: {len(uploaded)}, ready afterwards: {ready}")
        print(f"server RSS: {rss_start:.0f} MB at start, {rss_end:.0f} MB at the end")
        if samples:
            print("RSS every %ds (s: MB): %s" % (args.sample, ", ".join(f"{t:.0f}: {m:.0f}" for t, m in samples)))
            print(f"RSS under load: {min(m for _, m in samples):.0f}-{max(m for _, m in samples):.0f} MB")
        time.sleep(args.settle)
        print(f"server RSS {args.settle} s after the load: {rss_mb(server.pid):.0f} MB")

        hostile_queue(base, args.hostile)
    finally:
        server.terminate()
        server.wait(timeout=60)
        print(f"server exit code after SIGTERM: {server.returncode}")


if __name__ == "__main__":
    sys.exit(main())
