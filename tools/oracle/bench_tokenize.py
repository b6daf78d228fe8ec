"""tools/oracle/bench_tokenize.py DIR FILE [REPEATS]: encode speed of Hugging Face's Rust
tokenizers on FILE's text, the reference of `vl3 bench tokenize` (run inside tools/oracle's
native venv). DIR: tokenizer files (vocab.json + merges.txt, as gen_tokenizer.py loads them,
with the VideoLLaMA3 tokens). Single: the whole text in one encode call (one thread), first
(cold) run then best of REPEATS. Batched: the text's lines through encode_batch (Rust threads,
all cores), best of REPEATS. Prints one JSON line: tokens, cold_seconds, seconds, load_seconds,
hash (FNV-1a over the 32-bit ids of the single encode, as vl3 computes it), batch_seconds,
batch_tokens, batch_hash (over the concatenated ids of the lines).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tokenizer  # noqa: E402


def fnv(ids, h=0x811C9DC5):
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 0xFF
            h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def main():
    d, path = sys.argv[1:3]
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    t0 = time.perf_counter()
    tok = gen_tokenizer.load(d)
    load = time.perf_counter() - t0
    with open(path, encoding="utf-8", newline="") as f:  # no newline translation
        text = f.read()
    t0 = time.perf_counter()
    ids = tok.encode(text, add_special_tokens=False).ids
    cold = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        best = min(best, time.perf_counter() - t0)
    lines = text.split("\n")
    bbest = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc = tok.encode_batch(lines, add_special_tokens=False)
        bbest = min(bbest, time.perf_counter() - t0)
    bh = 0x811C9DC5
    bn = 0
    for e in enc:
        bh = fnv(e.ids, bh)
        bn += len(e.ids)
    print(json.dumps({"tokens": len(ids), "cold_seconds": cold, "seconds": best,
                      "load_seconds": load, "hash": fnv(ids), "batch_seconds": bbest,
                      "batch_tokens": bn, "batch_hash": bh}, separators=(",", ":")))


if __name__ == "__main__":
    main()
