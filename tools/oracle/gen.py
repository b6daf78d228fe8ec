"""tools/oracle/gen.py: golden dumps from the official transformers implementation.

Run through tools/oracle/gen (inside the venv made by tools/oracle/setup). For every case of
CASES it writes the tiny native checkpoint's processor + model outputs in the file format of
`vl3 run --dump` (cli/cmd_run.c), gzip-compressed, under tests/fixtures/oracle/<case>/:
input_ids.i32.gz, logits.f32.gz (last prompt position), generated.i32.gz (greedy, stop id
included), pixel_values.f32.gz and vision_out.f32.gz for visual cases, and case.json (the vl3 run
arguments the test must use, shapes, prompt text). The tiny model itself is not committed: the
test regenerates it with the same `vl3 model tiny` arguments (deterministic bytes).

With --bf16 it writes the bf16 variants <case>_bf16 of BF16_CASES instead: the same checkpoint
loaded with dtype=torch.bfloat16 (everything in bf16 as the released checkpoints run), greedy for
exactly BF16_NEW tokens (no stop id: eos neither stops nor is masked, so every step is the plain
argmax, as `vl3 run --ignore-eos`), plus step_logits.f32.gz: the raw logits of every step (row 0
= the prompt's last position). case.json says "precision": "bf16"; tests/engine/oracle_check.py
holds `vl3 run --precision bf16` to them with the bf16 tolerances (docs/oracle.md).

The native chat template file is not part of the tiny checkpoint (and was not readable for the
spec), so the prompt string is written here as spec §7.2's native test fixes it:
<|im_start|>user\\n<|image_pad|>\\n{text}<|im_end|>\\n<|im_start|>assistant\\n; the processor
expands the placeholder, tokenizes and makes pixel_values, the model does the rest.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw

TINY_ARGS = ["--layout", "native", "--seed", "3", "--std", "0.1"]
MAX_NEW = 8
# --bf16: the cases given a bf16 variant (<case>_bf16) and their greedy length
BF16_CASES = ("text_only", "photo_64x48", "v_long_max12")
BF16_NEW = 16

# task texts (docs/tasks.md), written out here independently of engine/src/tasks.c
CAPTION = "Describe this image in detail."
OCR = ("Read all the text in this image. Output the text exactly as it appears, "
       "one line per line of text.")
CHART_Q = "Which bar is the tallest?"


def img_photo(w, h, seed):
    """Smooth colour gradients plus a little noise, a photo-like RGB image."""
    r = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.stack([128 + 100 * np.sin(x / 7 + s) * np.cos(y / 11 - s) for s in (0, 1, 2)], -1)
    a += r.normal(0, 12, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def img_text(w, h):
    im = Image.new("RGB", (w, h), (250, 250, 245))
    d = ImageDraw.Draw(im)
    for i, line in enumerate(["Invoice 2026-12", "Total: 42.50 EUR", "Thank you!"]):
        d.text((6, 6 + 16 * i), line, fill=(10, 10, 30))
    return im


def img_gray(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(((x * 5 + y * 3) % 256).astype(np.uint8), "L")


def img_rgba(w, h):
    a = np.array(img_photo(w, h, 5).convert("RGBA"))
    y, x = np.mgrid[0:h, 0:w]
    a[..., 3] = ((x + y) * 4 % 256).astype(np.uint8)
    return Image.fromarray(a, "RGBA")


# The tiny checkpoint has no video_preprocessor_config.json; without one transformers builds the
# video processor from preprocessor_config.json (merge size 1, image budgets, no frame sampling).
# A native hub checkpoint ships one: the generator and the check both write this file into the
# tiny model directory (tests/fixtures/oracle/model_extra.json). The class defaults except a small
# pixel budget (3136..50176 per video, divided by its frame count) to keep the goldens small.
VIDEO_CONFIG = {
    "video_processor_type": "VideoLlama3VideoProcessor", "processor_class": "VideoLlama3Processor",
    "do_sample_frames": True, "merge_size": 2, "min_frames": 4, "max_frames": 180,
    "size": {"shortest_edge": 3136, "longest_edge": 50176}, "patch_size": 14,
    "temporal_patch_size": 1, "use_token_compression": True, "resample": 3,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "rescale_factor": 1 / 255,
}
MODEL_EXTRA = {"video_preprocessor_config.json": VIDEO_CONFIG}

VCAPTION = "Describe this video in detail."

# generated clips: name -> ffmpeg arguments (lavfi testsrc2, small, libx264 or mpeg4)
CLIPS = {
    # 7 fps, 9 s, odd size: 63 frames, fps 1 -> 9 frames
    "odd7fps.mp4": ["-f", "lavfi", "-t", "9", "-i", "testsrc2=size=90x54:rate=7",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"],
    # NTSC rate 24000/1001, 6 s, B-frames
    "ntsc.mp4": ["-f", "lavfi", "-t", "6", "-i", "testsrc2=size=64x48:rate=24000/1001",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "2"],
    # starts at 2.5 s (stream start offset)
    "offset.mp4": ["-f", "lavfi", "-t", "5", "-i", "testsrc2=size=64x48:rate=10",
                   "-c:v", "libx264", "-pix_fmt", "yuv420p", "-output_ts_offset", "2.5"],
    # under one second: 0.6 s at 25 fps (15 frames) -> min_frames 4
    "short.mp4": ["-f", "lavfi", "-t", "0.6", "-i", "testsrc2=size=64x48:rate=25",
                  "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    # 40 s at 2 fps: 80 frames, fps 1 -> 40 > --max-frames 12
    "long.mp4": ["-f", "lavfi", "-t", "40", "-i", "testsrc2=size=56x42:rate=2",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p"],
}


def make_clip(path, args):
    subprocess.run(["ffmpeg", "-v", "error", "-y"] + args + ["-an", "-map_metadata", "-1",
                    "-fflags", "+bitexact", "-flags", "+bitexact", path], check=True)


QWEN_TEXT = "Ünïcödé — 日本語のテキスト, emoji 🎬 and  spaces\t\ttabs\nnew line: 3.14159 <b>x</b>"


def qwen_cases():
    """Cases run with the real Qwen2.5 tokenizer (../shared/data/qwen2.5-tokenizer): ids and
    greedy ids only (151936 logits rows would make the golden too big)."""
    return {
        "qwen_text": (None, ["--prompt", QWEN_TEXT], QWEN_TEXT),
        "qwen_ocr": (img_text(140, 60), ["--task", "ocr"], OCR),
    }


def video_cases():
    """name -> (video, fps, max_frames, vl3 run arguments after --video, user text, system).
    video: "media:NAME" for ../shared/data/media/NAME (skipped without it), else a generated
    clip (CLIPS) committed beside the golden."""
    q = "What happens in the video?"
    return {
        "v_rabbit_caption": ("media:rabbit320.mp4", 1, 180, ["--task", "caption"], VCAPTION, 0),
        "v_rabbit_webm_qa": ("media:rabbit320.webm", 1, 180,
                             ["--task", "qa", "--question", q], q, 0),
        "v_crystal_fps2_system": ("media:crystal.mp4", 2, 180, ["--prompt", q, "--system-prompt",
                                  "default"], q, 1),
        "v_frog_max8": ("media:frog.mp4", 2, 8, ["--task", "ocr"],
                        OCR.replace("image", "video"), 0),
        "v_rotated90": ("media:video_90.mov", 1, 180, ["--prompt", q], q, 0),
        "v_unordered": ("media:unordered.mov", 1, 180, ["--prompt", q], q, 0),
        "v_odd7fps": ("odd7fps.mp4", 1, 180, ["--prompt", q], q, 0),
        "v_ntsc_chart": ("ntsc.mp4", 1, 180, ["--task", "chart_qa", "--question", CHART_Q],
                         CHART_Q + "\nAnswer the question using a single word or phrase.", 0),
        "v_offset": ("offset.mp4", 1, 180, ["--prompt", q], q, 0),
        "v_short": ("short.mp4", 1, 180, ["--prompt", q], q, 0),
        "v_long_max12": ("long.mp4", 1, 12, ["--prompt", q], q, 0),
    }


def cases():
    """name -> (image or None, vl3 run arguments after --image, user text)"""
    return {
        "text_system": (None, ["--prompt", "Hello, who are you?", "--system-prompt", "default"],
                        "Hello, who are you?"),
        "text_only": (None, ["--prompt", "Hello, who are you?"], "Hello, who are you?"),
        "photo_64x48": (img_photo(64, 48, 1), ["--prompt", "What is in the picture?"],
                        "What is in the picture?"),
        "exact_70x56": (img_photo(70, 56, 4), ["--prompt", "What is in the picture?"],
                        "What is in the picture?"),
        "odd_37x211": (img_photo(37, 211, 2), ["--prompt", "What is in the picture?"],
                       "What is in the picture?"),
        "textpage_caption": (img_text(140, 60), ["--task", "caption"], CAPTION),
        "textpage_ocr": (img_text(140, 60), ["--task", "ocr"], OCR),
        "gray_chart_qa": (img_gray(50, 30), ["--task", "chart_qa", "--question", CHART_Q],
                          CHART_Q + "\nAnswer the question using a single word or phrase."),
        "rgba_qa": (img_rgba(45, 33), ["--task", "qa", "--question", "Is it red?"], "Is it red?"),
    }


def save(path, arr, dtype):
    with gzip.GzipFile(path + ".gz", "wb", mtime=0) as f:
        f.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())


SYSTEM = ("You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help "
          "people understand images and videos.")


def all_cases(media_dir):
    """Every case as a dict: kind (text, image, video), vl3 args, user text, system, qwen."""
    out = {}
    for n, (img, args, text) in cases().items():
        out[n] = {"kind": "image" if img is not None else "text", "img": img, "args": args,
                  "text": text, "system": "--system-prompt" in args, "qwen": False}
    for n, (img, args, text) in qwen_cases().items():
        out[n] = {"kind": "image" if img is not None else "text", "img": img, "args": args,
                  "text": text, "system": False, "qwen": True}
    for n, (video, fps, maxf, args, text, system) in video_cases().items():
        if video.startswith("media:"):
            path = os.path.join(media_dir, video[6:])
            if not os.path.exists(path):
                print(f"skip {n}: {path} is not available", file=sys.stderr)
                continue
        out[n] = {"kind": "video", "video": video, "fps": fps, "max_frames": maxf,
                  "args": args, "text": text, "system": bool(system), "qwen": False}
    return out


def main():
    # imported here: gen_remote.py (transformers 4.46) imports this file's inputs
    from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration
    ap = argparse.ArgumentParser()
    ap.add_argument("--vl3", default="build/bin/vl3")
    ap.add_argument("--out", default="tests/fixtures/oracle")
    ap.add_argument("--work", default="/tmp/vl3-oracle-work")
    ap.add_argument("--qwen-tokenizer", default="../shared/data/qwen2.5-tokenizer")
    ap.add_argument("--media", default="../shared/data/media")
    ap.add_argument("--bf16", action="store_true",
                    help="write the bf16 variants <case>_bf16 of BF16_CASES instead")
    ap.add_argument("cases", nargs="*", help="only these cases (default: all)")
    a = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.work, exist_ok=True)
    with open(os.path.join(a.out, "model_extra.json"), "w") as f:
        json.dump(MODEL_EXTRA, f, indent=2, sort_keys=True)
        f.write("\n")

    def load(qwen):
        d = os.path.join(a.work, "tiny-native-qwen" if qwen else "tiny-native")
        extra = ["--tokenizer", a.qwen_tokenizer] if qwen else []
        subprocess.run([a.vl3, "model", "tiny", "--out", d] + TINY_ARGS + extra, check=True)
        for fn, content in MODEL_EXTRA.items():
            with open(os.path.join(d, fn), "w") as f:
                json.dump(content, f, indent=2)
        proc = AutoProcessor.from_pretrained(d)
        model = VideoLlama3ForConditionalGeneration.from_pretrained(
            d, dtype=torch.bfloat16 if a.bf16 else torch.float32)
        return proc, model.eval()

    loaded = {}
    manifest = []
    todo = all_cases(a.media)
    if a.bf16:
        todo = {n + "_bf16": c for n, c in todo.items() if n in BF16_CASES}
    max_new = BF16_NEW if a.bf16 else MAX_NEW
    for name, c in todo.items():
        if a.cases and name not in a.cases:
            continue
        if c["qwen"] not in loaded:
            loaded[c["qwen"]] = load(c["qwen"])
        proc, model = loaded[c["qwen"]]
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        kind = c["kind"]
        pad = {"image": "<|image_pad|>\n", "video": "<|video_pad|>\n", "text": ""}[kind]
        sysp = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n" if c["system"] else ""
        prompt = f"{sysp}<|im_start|>user\n{pad}{c['text']}<|im_end|>\n<|im_start|>assistant\n"
        case = {"max_new_tokens": max_new, "prompt_text": prompt, "files": {},
                "qwen_tokenizer": c["qwen"]}
        if a.bf16:
            case["precision"] = "bf16"
            case["ignore_eos"] = True
        if kind == "image":
            c["img"].save(os.path.join(d, "input.png"))
            # the processor gets the decoded file, as vl3 does
            inputs = proc(text=[prompt], images=[Image.open(os.path.join(d, "input.png"))],
                          return_tensors="pt")
            case["vl3_args"] = ["--image", "input.png"] + c["args"]
        elif kind == "video":
            v = c["video"]
            if v.startswith("media:"):
                path = os.path.join(a.media, v[6:])
            else:
                path = os.path.join(d, v)
                make_clip(path, CLIPS[v])
            inputs = proc(text=[prompt], videos=[path], fps=c["fps"], max_frames=c["max_frames"],
                          return_tensors="pt", return_metadata=True)
            md = inputs.pop("video_metadata")[0]
            case["vl3_args"] = ["--video", v, "--fps", str(c["fps"]), "--max-frames",
                                str(c["max_frames"])] + c["args"]
            case["frames_indices"] = [int(x) for x in md.frames_indices]
            case["video_fps"] = float(md.fps)
            case["total_num_frames"] = int(md.total_num_frames)
            case["timestamps_text"] = [f"{t:.1f}" for t in md.timestamps]
        else:
            inputs = proc(text=[prompt], return_tensors="pt")
            case["vl3_args"] = list(c["args"])
        with torch.no_grad():
            ids = inputs["input_ids"][0].numpy()
            save(os.path.join(d, "input_ids.i32"), ids, "<i4")
            case["files"]["input_ids.i32"] = [int(ids.shape[0])]
            if kind != "text":
                pk = "pixel_values" if kind == "image" else "pixel_values_videos"
                gk = "image_grid_thw" if kind == "image" else "video_grid_thw"
                mk = "image_merge_sizes" if kind == "image" else "video_merge_sizes"
                pv = inputs[pk].numpy()
                save(os.path.join(d, "pixel_values.f32"), pv, "<f4")
                case["files"]["pixel_values.f32"] = list(pv.shape)
                # the released checkpoints are bf16: the vision tower's
                # pixel_values.type(self.dtype) rounds its input to bf16, and vl3 does the same
                # in every mode; the float32 reference gets the same rounded input
                inputs[pk] = inputs[pk].bfloat16().to(model.dtype)
                feats = model.model.get_image_features(inputs[pk], inputs[gk], inputs[mk])
                vo = feats.pooler_output if hasattr(feats, "pooler_output") else feats
                if isinstance(vo, (list, tuple)):
                    vo = torch.cat(list(vo), 0)
                if kind == "video" and inputs.get("video_compression_mask") is not None:
                    keep = inputs["video_compression_mask"]
                    vo = vo[keep]
                    g = inputs[gk][0].tolist()
                    per = g[1] * g[2] // (int(inputs[mk][0]) ** 2)
                    case["kept_per_frame"] = keep.view(g[0], per).sum(1).tolist()
                vo = vo.float().numpy()
                save(os.path.join(d, "vision_out.f32"), vo, "<f4")
                case["files"]["vision_out.f32"] = list(vo.shape)
                case["grid_thw"] = inputs[gk].tolist()
            out = model(**inputs)
            lg = out.logits[0, -1].float().numpy()
            if not c["qwen"]:
                save(os.path.join(d, "logits.f32"), lg, "<f4")
                case["files"]["logits.f32"] = [int(lg.shape[0])]
            eos = model.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos])
            case["stop_ids"] = sorted(eos)
            if a.bf16:
                # no stop id: exactly max_new plain argmax steps, raw logits of each
                gen = model.generate(**inputs, do_sample=False, max_new_tokens=max_new,
                                     min_new_tokens=max_new, eos_token_id=[],
                                     repetition_penalty=1.0, temperature=None, top_k=None,
                                     top_p=None, output_logits=True,
                                     return_dict_in_generate=True)
                sl = torch.stack([x[0] for x in gen.logits]).float().numpy()
                save(os.path.join(d, "step_logits.f32"), sl, "<f4")
                case["files"]["step_logits.f32"] = list(sl.shape)
                gen = gen.sequences
                eos = set()
            else:
                gen = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW,
                                     repetition_penalty=1.0, temperature=None, top_k=None,
                                     top_p=None)
            g = gen[0, ids.shape[0]:].numpy()
            # generate() pads after an early stop: keep up to and including the first stop id
            keep = []
            for t in g.tolist():
                keep.append(t)
                if t in eos:
                    break
            save(os.path.join(d, "generated.i32"), np.array(keep), "<i4")
            case["files"]["generated.i32"] = [len(keep)]
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        print(f"{name}: {len(ids)} prompt ids, generated {keep}", file=sys.stderr)
    # the manifest lists every case directory (also those not regenerated in this run)
    for name in sorted(os.listdir(a.out)):
        cj = os.path.join(a.out, name, "case.json")
        if os.path.exists(cj):
            manifest.append((name, json.load(open(cj))))
    proc = loaded[False][0] if False in loaded else AutoProcessor.from_pretrained(
        os.path.join(a.work, "tiny-native"))
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("# Oracle goldens (MANIFEST)\n\nGenerated by `tools/oracle/setup && tools/oracle/gen`"
                " (tools/oracle/gen.py) from transformers' `VideoLlama3ForConditionalGeneration`"
                " + `AutoProcessor`, float32 on the CPU.\n\n")
        f.write(f"- tiny model: `vl3 model tiny {' '.join(TINY_ARGS)}` (regenerated by the test);"
                " the qwen_* cases add `--tokenizer ../shared/data/qwen2.5-tokenizer`; both get"
                " the files of model_extra.json (a native video_preprocessor_config.json)\n")
        f.write(f"- python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
                f"{transformers.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}\n")
        f.write(f"- image processor: `{type(proc.image_processor).__name__}`, video processor: "
                f"`{type(proc.video_processor).__name__}` (torchcodec decoding)\n")
        f.write(f"- `_bf16` cases (gen.py --bf16): the same model loaded with dtype=torch.bfloat16,"
                f" greedy for exactly {BF16_NEW} tokens with no stop id, step_logits.f32 = the raw"
                " logits of every step; checked against `vl3 run --precision bf16` with the bf16"
                " tolerances (docs/oracle.md)\n")
        f.write("- pixel_values are rounded to bf16 before the vision tower (as the bf16 checkpoints"
                " do); the dumped pixel_values are the processor's float32 output\n")
        f.write(f"- greedy: do_sample=False, repetition_penalty 1, max_new_tokens {MAX_NEW}, "
                "stop ids: the generation config's eos_token_id (stop_ids in case.json)\n"
                "- video cases named media:X use ../shared/data/media/X"
                " (skipped without it); the others' clips are committed (made by ffmpeg, CLIPS in"
                " gen.py)\n\n| case | vl3 run args | prompt ids | generated |\n"
                "|---|---|---|---|\n")
        for name, c in manifest:
            args = " ".join(c["vl3_args"]).replace("\n", " ").replace("\t", " ")
            f.write(f"| {name} | `{args}` | {c['files']['input_ids.i32'][0]}"
                    f" | {c['files']['generated.i32'][0]} |\n")


if __name__ == "__main__":
    main()
