#!/usr/bin/env python3
"""tools/bench/gpu_hf.py: the official side of `vl3 bench gpu` (cli/bench_gpu.c), for
tools/gpu-check's side-by-side step.

Runs transformers' VideoLlama3ForConditionalGeneration in bfloat16 on the same synthetic work
`vl3 bench gpu` times, with the same default sizes, and prints the same phase rows:
  - vision encoder: --frames frames of 14 x 24 patches, merge 2 (the model's vision tower and
    projector, get_video_features), patches/s;
  - prefill: one forward over --prompt-tokens random text ids with the KV cache on, tokens/s;
  - decode batch B: B sequences of 16 prompt ids, then --gen-tokens greedy steps over the KV cache
    (one forward per step for the whole batch), tokens/s over all sequences;
  - 3-min window (est.): composed from the rows above exactly as vl3 bench gpu composes it.
With --vl3 FILE (the saved output of `vl3 bench gpu`) it adds vl3's figure and the ratio
vl3 / transformers per row. --json prints one JSON object instead of the table.

Run with the venv of tools/oracle/setup (here, CPU: --device cpu on a tiny model, to check the
script) or with the system python of a GPU machine (torch 2.x + transformers 5.x, --device cuda).
"""
import argparse
import json
import re
import sys
import time


def sync(torch, dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def timed(torch, dev, fn):
    sync(torch, dev)
    t0 = time.perf_counter()
    out = fn()
    sync(torch, dev)
    return time.perf_counter() - t0, out


def vl3_rows(path):
    """phase -> rate from the table `vl3 bench gpu` printed."""
    rows = {}
    pat = re.compile(r"^(vision encoder|prefill|decode batch \d+|3-min window \(est\.\))\s+"
                     r"([0-9.]+)\s+([0-9.]+)\s")
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if m:
                rows[m.group(1)] = float(m.group(3))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--vl3", help="saved output of vl3 bench gpu: adds its column and ratios")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",") if b]
    if a.frames < 1 or a.prompt_tokens < 1 or a.gen_tokens < 1 or not batches or \
            min(batches) < 1:
        ap.error("sizes must be positive")

    import torch
    from transformers import VideoLlama3ForConditionalGeneration
    dev = a.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_hf.py: no CUDA device visible to torch", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    model = VideoLlama3ForConditionalGeneration.from_pretrained(a.model, dtype=torch.bfloat16)
    model.to(dev).eval()
    load_s = time.perf_counter() - t0
    cfg = model.config.text_config
    V = cfg.vocab_size
    res = {"torch": torch.__version__, "device": dev, "load_s": load_s,
           "device_name": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"}
    g = torch.Generator().manual_seed(12345)
    with torch.inference_mode():
        # vision: the same frames x 14 x 24 patches of 588 values as vl3 bench gpu
        gh, gw = 14, 24
        P = a.frames * gh * gw
        pix = (torch.rand(P, 588, generator=g) * 2 - 1).to(dev, torch.bfloat16)
        thw = torch.tensor([[a.frames, gh, gw]], device=dev)
        ms = torch.tensor([2], device=dev)
        model.model.get_video_features(pix, thw, ms)  # warm-up
        vis_s, _ = timed(torch, dev, lambda: model.model.get_video_features(pix, thw, ms))
        res["vision_s"] = vis_s
        res["patches"] = P

        ids = torch.randint(0, V, (1, a.prompt_tokens + a.gen_tokens), generator=g).to(dev)
        model(input_ids=ids[:, :8], use_cache=True)  # warm-up
        pre_s, _ = timed(torch, dev,
                         lambda: model(input_ids=ids[:, :a.prompt_tokens], use_cache=True))
        res["prefill_s"] = pre_s
        res["prompt_tokens"] = a.prompt_tokens

        res["decode"] = {}
        for B in batches:
            prompt = torch.stack([ids[0, s % 4:s % 4 + 16] for s in range(B)])
            out = model(input_ids=prompt, use_cache=True)
            past = out.past_key_values

            n_ids = ids.shape[1]
            toks = [torch.stack([ids[0, (s + i) % n_ids] for s in range(B)]).view(B, 1)
                    for i in range(a.gen_tokens)]  # the same ids vl3 bench gpu feeds, made first

            def steps():
                nonlocal past
                for tok in toks:
                    o = model(input_ids=tok, past_key_values=past, use_cache=True)
                    past = o.past_key_values
                    o.logits[:, -1].argmax(-1)
            dt, _ = timed(torch, dev, steps)
            res["decode"][str(B)] = dt
    # the same composition as vl3 bench gpu's "3-min window (est.)" row
    win_tokens = 180.0 * gh * gw / 4
    dec_b1 = res["decode"].get("1", 0) / a.gen_tokens
    win_s = vis_s * 180.0 / a.frames + pre_s * win_tokens / a.prompt_tokens + 64 * dec_b1
    rates = {"vision encoder": P / vis_s, "prefill": a.prompt_tokens / pre_s}
    for B in batches:
        rates[f"decode batch {B}"] = B * a.gen_tokens / res["decode"][str(B)]
    if "1" in res["decode"]:
        rates["3-min window (est.)"] = 1 / win_s
    res["rates"] = rates
    if a.json:
        print(json.dumps(res))
        return 0
    mine = vl3_rows(a.vl3) if a.vl3 else {}
    units = {"vision encoder": "patches/s", "prefill": "tokens/s",
             "3-min window (est.)": "windows/s"}
    print(f"transformers {res['torch']} VideoLlama3 bf16 on {res['device_name']}, "
          f"load {load_s:.2f} s\n")
    print("| phase | unit | transformers | vl3 | vl3 / transformers |")
    print("|---|---|---|---|---|")
    for name, rate in rates.items():
        v = mine.get(name)
        print(f"| {name} | {units.get(name, 'tokens/s')} | {rate:.4g} | "
              f"{'%.4g' % v if v is not None else '-'} | "
              f"{'%.2fx' % (v / rate) if v is not None and rate > 0 else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
