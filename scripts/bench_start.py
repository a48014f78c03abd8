#!/usr/bin/env python3
"""Start `ragbox serve` several times and time it: exec to `/health/ready` 200, exec to
the generation model in place (`"generator": "loaded"` in that body), and the server's
RSS a few idle seconds after that. The first start gets an empty data dir, the later
ones reuse it. Standard library only.

    scripts/bench_start.py --binary target/release/ragbox --starts 5 [--set embedding.precision=int8]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ready_body(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
            return r.status, json.loads(r.read() or b"{}")
    except Exception:
        return None, None


def toml_value(text):
    if text in ("true", "false") or text.lstrip("-").replace(".", "", 1).isdigit():
        return text
    return json.dumps(text)


def config_text(data_dir, port, models, sets):
    sections = {
        "server": {"bind": json.dumps(f"127.0.0.1:{port}")},
        "storage": {"data_dir": json.dumps(data_dir)},
        "models": {
            "embedding_dir": json.dumps(os.path.join(models, "all-MiniLM-L6-v2")),
            "generation_file": json.dumps(
                os.path.join(models, "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
            ),
        },
    }
    for item in sets:
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        sections.setdefault(section, {})[name] = toml_value(value)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ragbox")
    ap.add_argument("--models", default="models")
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading RSS")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ragbox-start-")
    data_dir = os.path.join(work, "data")
    rows = []
    for n in range(1, args.starts + 1):
        port = free_port()
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write(config_text(data_dir, port, os.path.abspath(args.models), args.set))
        started = time.monotonic()
        proc = subprocess.Popen(
            [args.binary, "--config", config, "serve"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready = loaded = None
        while time.monotonic() - started < 60:
            if proc.poll() is not None:
                sys.exit(f"start {n}: the server exited with {proc.returncode}")
            status, body = ready_body(port)
            now = time.monotonic() - started
            if status == 200 and ready is None:
                ready = now
            if status == 200 and body.get("generator") == "loaded":
                loaded = now
                break
            time.sleep(0.01)
        if loaded is None:
            proc.kill()
            sys.exit(f"start {n}: not ready with the generator loaded within 60 s")
        time.sleep(args.settle)
        rss = rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        rows.append((ready, loaded, rss))
        print(f"start {n}: ready {ready:.3f} s, generator loaded {loaded:.3f} s, "
              f"RSS {rss:.0f} MB {args.settle:.0f} s later, exit {proc.returncode}")
    ready = [r[0] for r in rows]
    loaded = [r[1] for r in rows]
    rss = [r[2] for r in rows]
    print(f"{len(rows)} starts: ready {min(ready):.2f}-{max(ready):.2f} s, "
          f"generator loaded {min(loaded):.2f}-{max(loaded):.2f} s, "
          f"idle RSS {min(rss):.0f}-{max(rss):.0f} MB")


if __name__ == "__main__":
    main()
