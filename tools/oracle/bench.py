"""tools/oracle/bench.py: transformers (native VideoLlama3, CPU) against `vl3 run`, timed side by
side on the same inputs (docs/benchmarks.md, "Oracle baseline").

Usage (native venv): tools/oracle/.venv-native/bin/python tools/oracle/bench.py
    [--model DIR] [--threads N] [--new N] [--repeats N] [--video FILE --fps F]

Without --model it writes the tiny native checkpoint (`vl3 model tiny --layout native --seed 3
--std 0.1`; tools/oracle/make_2b.py makes a 2B-sized one); a model without one gets a
video_preprocessor_config.json holding the class defaults (do_sample_frames on,
merge 2, 100352..602112 pixels per video). For each input (one 640x480 photo-like PNG; one video
sampled to 16 frames: frog.mp4 at 2 fps by default) it times, best of --repeats after one warm-up:
  transformers: processor(...) + model.generate(greedy, max_new_tokens N), float32 (--dtype bf16:
      bfloat16, and vl3 with --precision bf16), N threads;
  vl3: the wall time of `vl3 run --greedy --max-new-tokens N --threads N` minus its load_s
       (meta.json), i.e. decoding/sampling the input, preprocessing, vision, prefill, decode.
Model loading is excluded on both sides. Prints a Markdown table row per input.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen as G  # noqa: E402

VIDEO_CONFIG = dict(G.VIDEO_CONFIG, size={"shortest_edge": 128 * 28 * 28,
                                          "longest_edge": 768 * 28 * 28})


def main():
    from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration
    ap = argparse.ArgumentParser()
    ap.add_argument("--vl3", default="build/bin/vl3")
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--video", default="../shared/data/media/frog.mp4")
    ap.add_argument("--fps", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of inputs to skip (image,video)")
    ap.add_argument("--no-warmup", action="store_true", help="no untimed first run (2B sizes)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="transformers' dtype and vl3's --precision (default f32)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = tempfile.mkdtemp(prefix="vl3-oracle-bench-")
    model_dir = a.model
    if not model_dir:
        model_dir = os.path.join(work, "tiny-native")
        subprocess.run([a.vl3, "model", "tiny", "--out", model_dir, "--layout", "native",
                        "--seed", "3", "--std", "0.1"], check=True, stdout=subprocess.DEVNULL)
    vcfg = os.path.join(model_dir, "video_preprocessor_config.json")
    if not os.path.exists(vcfg):
        with open(vcfg, "w") as f:
            json.dump(VIDEO_CONFIG, f)
    t0 = time.perf_counter()
    proc = AutoProcessor.from_pretrained(model_dir)
    model = VideoLlama3ForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    model.eval()
    hf_load = time.perf_counter() - t0
    img_path = os.path.join(work, "photo.png")
    G.img_photo(640, 480, 7).save(img_path)
    q = "Describe this in detail."
    inputs = {
        "image": (["--image", img_path],
                  lambda: proc(text=[f"<|im_start|>user\n<|image_pad|>\n{q}<|im_end|>\n"
                                     "<|im_start|>assistant\n"],
                               images=[Image.open(img_path)], return_tensors="pt")),
        "video": (["--video", a.video, "--fps", str(a.fps)],
                  lambda: proc(text=[f"<|im_start|>user\n<|video_pad|>\n{q}<|im_end|>\n"
                                     "<|im_start|>assistant\n"],
                               videos=[a.video], fps=a.fps, max_frames=180,
                               return_tensors="pt", return_metadata=True)),
    }
    print(f"model {model_dir}: transformers load {hf_load:.2f} s, threads {a.threads}, "
          f"{a.new} new tokens, best of {a.repeats}", file=sys.stderr)
    rows = []
    for name, (vargs, make) in inputs.items():
        if name in a.skip.split(","):
            continue
        best_hf = best_vl3 = float("inf")
        info = ""
        for rep in range(a.repeats + (0 if a.no_warmup else 1)):
            # transformers
            t0 = time.perf_counter()
            x = make()
            md = x.pop("video_metadata", None)
            with torch.no_grad():
                out = model.generate(**x, do_sample=False, max_new_tokens=a.new,
                                     min_new_tokens=a.new, repetition_penalty=1.0,
                                     temperature=None, top_k=None, top_p=None)
            t_hf = time.perf_counter() - t0
            n_prompt = int(x["input_ids"].shape[1])
            n_hf = int(out.shape[1]) - n_prompt
            # vl3
            dump = os.path.join(work, f"dump-{name}")
            t0 = time.perf_counter()
            subprocess.run([a.vl3, "run", "--model", model_dir, "--greedy", "--max-new-tokens",
                            str(a.new), "--threads", str(a.threads), "--prompt", q, "--dump",
                            dump, "--precision", a.dtype] + vargs, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            t_vl3 = time.perf_counter() - t0
            meta = json.load(open(os.path.join(dump, "meta.json")))
            t_vl3 -= meta["timings"]["load_s"]
            if rep == 0 and not a.no_warmup:
                continue  # warm-up
            best_hf = min(best_hf, t_hf)
            best_vl3 = min(best_vl3, t_vl3)
            frames = len(md[0].frames_indices) if md is not None else 1
            info = (f"{frames} frame(s), {n_prompt} prompt ids (vl3 {meta['n_prompt']}), "
                    f"{n_hf} / {meta['n_generated']} generated")
        rows.append((name, info, best_hf, best_vl3))
        print(f"| {name} | {info} | {best_hf:.3f} | {best_vl3:.3f} | {best_hf / best_vl3:.1f}x |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
