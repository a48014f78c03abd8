#!/usr/bin/env python3
"""The peer of `ragbox bench generate`: llama.cpp (through llama-cpp-python) on the same
GGUF, same protocol: a prompt of N tokens, then a fixed number of greedy new tokens.
Never a runtime dependency of ragbox.

    /tmp/venv/bin/python scripts/bench_llama_cpp.py MODEL.gguf [--prompt-tokens 64,1024] \
        [--new-tokens 128] [--threads 2]
"""
import argparse
import time

from llama_cpp import Llama

TEXT = (
    "The keeper of the lighthouse on the northern island wrote in his log every evening: "
    "the weather, the ships that passed, the state of the lamp and the oil that remained, "
    "the birds that rested on the gallery, and the letters he meant to send. "
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", default="64,1024")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=2048)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.context, n_threads=a.threads, n_batch=512, verbose=False)
    lengths = [int(x) for x in a.prompt_tokens.split(",")]
    tokens = llm.tokenize((TEXT * (1 + 4 * max(lengths) // 40)).encode(), add_bos=False)
    for n in lengths:
        llm.reset()
        prompt = tokens[:n]
        t = time.perf_counter()
        llm.eval(prompt)
        first = llm.sample(temp=0.0)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        tok = first
        for _ in range(a.new_tokens - 1):
            llm.eval([tok])
            tok = llm.sample(temp=0.0)
        t_decode = time.perf_counter() - t
        print(
            f"llama.cpp: prompt {n} tokens: first token after {t_first * 1000:.1f} ms "
            f"({n / t_first:.0f} prompt tokens/s); decode {a.new_tokens} tokens at "
            f"{(a.new_tokens - 1) / t_decode:.1f} tokens/s ({a.threads} threads)"
        )


if __name__ == "__main__":
    main()
