#!/usr/bin/env python3
"""tools/bench/cpu_hf.py: the transformers side of `vl3 bench cpu` (cli/bench_cpu.c).

Runs the official VideoLlama3ForConditionalGeneration in bfloat16 on the CPU over one image (or,
with --video, one clip through the model's video processor) and
prints one JSON line of phase times: import, load (processor + weights), vision (the image
features alone), prefill (a forward over the prompt, vision included, as the first step of
generate does), decode (tokens/s of greedy generate after its first token) and the whole of
load + one generate. `--make-image PATH` instead writes the benchmark's text-page image.
Run with the venv of tools/oracle/setup.
"""
import argparse
import json
import sys
import time

T_START = time.time()


def make_image(path, w, h):
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    words = ("the quick brown fox jumps over the lazy dog while the model reads this page "
             "of text to measure how fast it can see and answer ").split()
    y, i = 4, 0
    while y < h - 12:
        line = " ".join(words[(i + k) % len(words)] for k in range(7))
        d.text((4, y), line, fill="black")
        y += 14
        i += 3
    img.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--image")
    ap.add_argument("--video", help="a video instead of the image (the model's video processor)")
    ap.add_argument("--fps", type=float, default=1.0, help="with --video: sampling rate")
    ap.add_argument("--prompt", default="Describe the image.")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--make-image")
    ap.add_argument("--size", default="384x191")
    a = ap.parse_args()
    if a.make_image:
        w, h = (int(v) for v in a.size.split("x"))
        make_image(a.make_image, w, h)
        return 0
    import torch
    from PIL import Image
    from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    t_import = time.time() - T_START
    t0 = time.time()
    proc = AutoProcessor.from_pretrained(a.model)
    model = VideoLlama3ForConditionalGeneration.from_pretrained(a.model, dtype=torch.bfloat16)
    model.eval()
    t_load = time.time() - t0
    if a.video:
        prompt = (f"<|im_start|>user\n<|video_pad|>\n{a.prompt}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        inputs = proc(text=[prompt], videos=[a.video], fps=a.fps, max_frames=180,
                      return_tensors="pt", return_metadata=True)
        inputs.pop("video_metadata", None)
    else:
        prompt = f"<|im_start|>user\n<|image_pad|>\n{a.prompt}<|im_end|>\n<|im_start|>assistant\n"
        inputs = proc(text=[prompt], images=[Image.open(a.image)], return_tensors="pt")
    n_prompt = int(inputs["input_ids"].shape[1])
    res = {"import_s": t_import, "load_s": t_load, "n_prompt": n_prompt,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        t0 = time.time()
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=a.new_tokens,
                             min_new_tokens=a.new_tokens, repetition_penalty=1.0,
                             temperature=None, top_k=None, top_p=None)
        t_gen = time.time() - t0
        res["n_generated"] = int(gen.shape[1] - n_prompt)
        res["whole_s"] = time.time() - T_START
        t0 = time.time()
        if a.video:
            # the vision tower over the video's patches (the same encoder call generate makes)
            try:
                pv = inputs["pixel_values_videos"].to(torch.bfloat16)
                model.model.get_video_features(pv, inputs["video_grid_thw"],
                                               inputs["video_merge_sizes"])
                res["vision_s"] = time.time() - t0
            except (AttributeError, KeyError, TypeError) as e:
                res["vision_s"] = 0  # not measurable through this transformers release
                res["vision_note"] = str(e)
        else:
            pv = inputs["pixel_values"].to(torch.bfloat16)
            model.model.get_image_features(pv, inputs["image_grid_thw"],
                                           inputs["image_merge_sizes"])
            res["vision_s"] = time.time() - t0
        t0 = time.time()
        model(**inputs)
        res["prefill_s"] = time.time() - t0  # vision + prefill, one forward
        decode_s = t_gen - res["prefill_s"]
        res["decode_s"] = decode_s
        res["decode_tok_s"] = (res["n_generated"] - 1) / decode_s if decode_s > 0 else 0
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
