#!/usr/bin/python3
"""test_loader_st.py: an independent reader of a tiny checkpoint written by `vl3 model tiny`.

Used by test-loader (case python_reference). Reads the safetensors files with struct/json/numpy
only (no safetensors or torch package), checks the format invariants our writer promises and the
consistency of the config and tokenizer files, and prints one JSON object per tensor summary
(dtype, shape, file, float64 sum and sum of squares of the bf16 values, first values) for the C
test to compare with what vl3_model_load mapped. Exits 1 with a message on any violation.

usage: test_loader_st.py CHECKPOINT_DIR
"""
import json
import os
import struct
import sys

import numpy as np


def fail(msg):
    print("test_loader_st.py: " + msg, file=sys.stderr)
    sys.exit(1)


def bf16_to_f32(raw):
    u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
    return (u16 << 16).view(np.float32)


def read_file(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: too short")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        fail(f"{path}: header length {n} past the end")
    if (8 + n) % 8 != 0:
        fail(f"{path}: data area not 8-byte aligned (header length {n})")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    if meta != {"format": "pt"}:
        fail(f"{path}: __metadata__ is {meta!r}")
    data = blob[8 + n :]
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    pos = 0
    for b, e, k in spans:
        if b != pos:
            fail(f"{path}: tensor {k} starts at {b}, expected {pos} (gap or overlap)")
        pos = e
    if pos != len(data):
        fail(f"{path}: data area is {len(data)} bytes, tensors cover {pos}")
    out = {}
    for k, v in header.items():
        if v["dtype"] != "BF16":
            fail(f"{path}: tensor {k} has dtype {v['dtype']}")
        b, e = v["data_offsets"]
        count = int(np.prod(v["shape"], dtype=np.int64)) if v["shape"] else 1
        if count * 2 != e - b:
            fail(f"{path}: tensor {k} shape {v['shape']} does not match {e - b} bytes")
        vals = bf16_to_f32(data[b:e]).astype(np.float64)
        if not np.all(np.isfinite(vals)):
            fail(f"{path}: tensor {k} has non-finite values")
        out[k] = {
            "dtype": v["dtype"],
            "shape": v["shape"],
            "file": os.path.basename(path),
            "sum": float(vals.sum()),
            "sumsq": float((vals * vals).sum()),
            "first": [float(x) for x in vals[:4]],
            "mean": float(vals.mean()),
            "std": float(vals.std()),
            "n": count,
        }
    return out, len(data)


def main():
    if len(sys.argv) != 2:
        fail("usage: test_loader_st.py DIR")
    d = sys.argv[1]
    tensors = {}
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        idx = json.load(open(index))
        wm = idx["weight_map"]
        total = 0
        for shard in sorted(set(wm.values())):
            t, nbytes = read_file(os.path.join(d, shard))
            total += nbytes
            for k in t:
                if wm.get(k) != shard:
                    fail(f"index names {wm.get(k)} for {k}, found in {shard}")
            tensors.update(t)
        if set(wm) != set(tensors):
            fail("index weight_map and shard contents differ")
        if idx["metadata"]["total_size"] != total:
            fail(f"index total_size {idx['metadata']['total_size']} != {total}")
    else:
        tensors, _ = read_file(os.path.join(d, "model.safetensors"))

    # value statistics of the initialisation (std 0.02; norm weights near 1)
    for k, v in tensors.items():
        if v["n"] < 2000:
            continue
        if abs(v["mean"]) > 0.002 or not 0.018 < v["std"] < 0.022:
            fail(f"tensor {k}: mean {v['mean']:.5f} std {v['std']:.5f}, expected N(0, 0.02^2)")
    for k, v in tensors.items():
        if "norm" in k and k.endswith(".weight") and not 0.99 < v["mean"] < 1.01:
            fail(f"tensor {k}: mean {v['mean']:.4f}, expected about 1")

    # config and tokenizer agree
    cfg = json.load(open(os.path.join(d, "config.json")))
    added = json.load(open(os.path.join(d, "added_tokens.json")))
    vocab = json.load(open(os.path.join(d, "vocab.json")))
    remote = cfg["model_type"] == "videollama3_qwen2"
    text = cfg if remote else cfg["text_config"]
    if text["bos_token_id"] != added["<|endoftext|>"] or text["eos_token_id"] != added["<|im_end|>"]:
        fail("config bos/eos ids disagree with added_tokens.json")
    if remote:
        if cfg["image_token_index"] != added["<image>"]:
            fail("image_token_index disagrees with <image>")
    elif cfg["image_token_id"] != added["<|image_pad|>"] or cfg["video_token_id"] != added["<|video_pad|>"]:
        fail("image/video token ids disagree with added_tokens.json")
    n_ids = max(max(vocab.values()), max(added.values())) + 1
    if text["vocab_size"] < n_ids:
        fail(f"vocab_size {text['vocab_size']} < {n_ids} ids")
    emb = "model.embed_tokens.weight" if remote else "model.language_model.embed_tokens.weight"
    if tensors[emb]["shape"] != [text["vocab_size"], text["hidden_size"]]:
        fail(f"{emb} shape {tensors[emb]['shape']}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        fail("vocab.json ids are not 0..n-1")
    with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines[0] != "#version: 0.2":
        fail("merges.txt header")
    for ln in lines[1:]:
        if not ln:
            continue
        a, b = ln.split(" ")
        if a not in vocab or b not in vocab or a + b not in vocab:
            fail(f"merge {ln!r} is not closed over vocab.json")
    summary = {k: {kk: v[kk] for kk in ("dtype", "shape", "file", "sum", "sumsq", "first")}
               for k, v in tensors.items()}
    json.dump({"n_tensors": len(tensors), "tensors": summary}, sys.stdout)


if __name__ == "__main__":
    main()
