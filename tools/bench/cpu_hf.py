#!/usr/bin/env python3
"""tools/bench/cpu_hf.py: the transformers side of `vl3 bench cpu` (cli/bench_cpu.c).

Runs the official VideoLlama3ForConditionalGeneration in bfloat16 on the CPU over one image (or,
with --video, one clip through the model's video processor) and
prints one JSON line of phase times: import, load (processor + weights), preprocess (the
processor call), the first pass inside generate as the user gets it in a new process -- vision
(the time spent in the model's image/video feature call, timed by wrapping it) and vision +
prefill (generate's call to its first new token, from the streamer's timestamps) --, decode (tokens/s
between the first and the last new token, streamer timestamps) and the whole of import + load + one
generate. After generate, the same vision call and one forward over the prompt run again and are
reported as the warm figures (vision_warm_s, vis_prefill_warm_s: caches and page tables already
filled). `--make-image PATH` instead writes the benchmark's text-page image.
Run with the venv of tools/oracle/setup.
"""
import argparse
import functools
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


class Stamps:
    """A generate streamer that only notes when each put arrives: the prompt first, then every
    new token."""

    def __init__(self):
        self.t = []

    def put(self, value):
        self.t.append(time.time())

    def end(self):
        pass


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
    t0 = time.time()
    if a.video:
        prompt = (f"<|im_start|>user\n<|video_pad|>\n{a.prompt}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        inputs = proc(text=[prompt], videos=[a.video], fps=a.fps, max_frames=180,
                      return_tensors="pt", return_metadata=True)
        inputs.pop("video_metadata", None)
    else:
        prompt = f"<|im_start|>user\n<|image_pad|>\n{a.prompt}<|im_end|>\n<|im_start|>assistant\n"
        inputs = proc(text=[prompt], images=[Image.open(a.image)], return_tensors="pt")
    t_pre = time.time() - t0
    n_prompt = int(inputs["input_ids"].shape[1])
    res = {"import_s": t_import, "load_s": t_load, "preprocess_s": t_pre, "n_prompt": n_prompt,
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    inner = model.model
    feature_fn = "get_video_features" if a.video else "get_image_features"
    orig = getattr(inner, feature_fn)
    vision_t = [0.0]

    @functools.wraps(orig)  # generate reads the parameter names through inspect.signature
    def timed_features(*args, **kw):
        t = time.time()
        out = orig(*args, **kw)
        vision_t[0] += time.time() - t
        return out

    setattr(inner, feature_fn, timed_features)
    streamer = Stamps()
    with torch.inference_mode():
        t0 = time.time()
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=a.new_tokens,
                             min_new_tokens=a.new_tokens, repetition_penalty=1.0,
                             temperature=None, top_k=None, top_p=None, streamer=streamer)
        setattr(inner, feature_fn, orig)
        res["n_generated"] = int(gen.shape[1] - n_prompt)
        res["whole_s"] = time.time() - T_START
        st = streamer.t  # [prompt, token 1, token 2, ...]
        res["vision_s"] = vision_t[0]
        res["vis_prefill_s"] = st[1] - t0 if len(st) > 1 else 0
        if len(st) > 2:
            res["decode_s"] = st[-1] - st[1]
            res["decode_tok_s"] = (len(st) - 2) / res["decode_s"]
        t0 = time.time()
        if a.video:
            # the vision tower over the video's patches (the same encoder call generate makes)
            try:
                pv = inputs["pixel_values_videos"].to(torch.bfloat16)
                model.model.get_video_features(pv, inputs["video_grid_thw"],
                                               inputs["video_merge_sizes"])
                res["vision_warm_s"] = time.time() - t0
            except (AttributeError, KeyError, TypeError) as e:
                res["vision_warm_s"] = 0  # not measurable through this transformers release
                res["vision_note"] = str(e)
        else:
            pv = inputs["pixel_values"].to(torch.bfloat16)
            model.model.get_image_features(pv, inputs["image_grid_thw"],
                                           inputs["image_merge_sizes"])
            res["vision_warm_s"] = time.time() - t0
        t0 = time.time()
        model(**inputs)
        res["vis_prefill_warm_s"] = time.time() - t0  # vision + prefill, one forward
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
