"""tools/oracle/gen.py: golden dumps from the official transformers implementation.

Run through tools/oracle/gen (inside the venv made by tools/oracle/setup). For every case of
CASES it writes the tiny native checkpoint's processor + model outputs in the file format of
`vl3 run --dump` (cli/cmd_run.c), gzip-compressed, under tests/fixtures/oracle/<case>/:
input_ids.i32.gz, logits.f32.gz (last prompt position), generated.i32.gz (greedy, stop id
included), pixel_values.f32.gz and vision_out.f32.gz for visual cases, and case.json (the vl3 run
arguments the test must use, shapes, prompt text). The tiny model itself is not committed: the
test regenerates it with the same `vl3 model tiny` arguments (deterministic bytes).

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
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

TINY_ARGS = ["--layout", "native", "--seed", "3", "--std", "0.1"]
MAX_NEW = 8

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


QWEN_TEXT = "Ünïcödé — 日本語のテキスト, emoji 🎬 and  spaces\t\ttabs\nnew line: 3.14159 <b>x</b>"


def qwen_cases():
    """Cases run with the real Qwen2.5 tokenizer (../shared/data/qwen2.5-tokenizer): ids and
    greedy ids only (151936 logits rows would make the golden too big)."""
    return {
        "qwen_text": (None, ["--prompt", QWEN_TEXT], QWEN_TEXT),
        "qwen_ocr": (img_text(140, 60), ["--task", "ocr"], OCR),
    }


def cases():
    """name -> (image or None, vl3 run arguments after --image, user text)"""
    return {
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vl3", default="build/bin/vl3")
    ap.add_argument("--out", default="tests/fixtures/oracle")
    ap.add_argument("--work", default="/tmp/vl3-oracle-work")
    ap.add_argument("--qwen-tokenizer", default="../shared/data/qwen2.5-tokenizer")
    a = ap.parse_args()
    torch.manual_seed(0)
    model_dir = os.path.join(a.work, "tiny-native")
    os.makedirs(a.work, exist_ok=True)
    subprocess.run([a.vl3, "model", "tiny", "--out", model_dir] + TINY_ARGS, check=True)
    proc = AutoProcessor.from_pretrained(model_dir)
    model = VideoLlama3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    qdir = os.path.join(a.work, "tiny-native-qwen")
    subprocess.run([a.vl3, "model", "tiny", "--out", qdir, "--tokenizer", a.qwen_tokenizer]
                   + TINY_ARGS, check=True)
    runs = [(n, c, model_dir, proc, model) for n, c in cases().items()]
    qproc = AutoProcessor.from_pretrained(qdir)
    qmodel = VideoLlama3ForConditionalGeneration.from_pretrained(qdir, dtype=torch.float32).eval()
    runs += [(n, c, qdir, qproc, qmodel) for n, c in qwen_cases().items()]
    manifest = []
    for name, (img, run_args, text), mdir, proc, model in runs:
        qwen = mdir == qdir
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        pad = "<|image_pad|>\n" if img is not None else ""
        prompt = f"<|im_start|>user\n{pad}{text}<|im_end|>\n<|im_start|>assistant\n"
        if img is not None:
            img.save(os.path.join(d, "input.png"))
            # the processor gets the decoded file, as vl3 does
            inputs = proc(text=[prompt], images=[Image.open(os.path.join(d, "input.png"))],
                          return_tensors="pt")
        else:
            inputs = proc(text=[prompt], return_tensors="pt")
        case = {"vl3_args": (["--image", "input.png"] if img is not None else []) + run_args,
                "max_new_tokens": MAX_NEW, "prompt_text": prompt, "files": {},
                "qwen_tokenizer": qwen}
        with torch.no_grad():
            ids = inputs["input_ids"][0].numpy()
            save(os.path.join(d, "input_ids.i32"), ids, "<i4")
            case["files"]["input_ids.i32"] = [int(ids.shape[0])]
            if img is not None:
                pv = inputs["pixel_values"].numpy()
                save(os.path.join(d, "pixel_values.f32"), pv, "<f4")
                case["files"]["pixel_values.f32"] = list(pv.shape)
                # the released checkpoints are bf16: the vision tower's
                # pixel_values.type(self.dtype) rounds its input to bf16, and vl3 does the same
                # in every mode; the float32 reference gets the same rounded input
                inputs["pixel_values"] = inputs["pixel_values"].bfloat16().float()
                feats = model.model.get_image_features(
                    inputs["pixel_values"], inputs["image_grid_thw"], inputs["image_merge_sizes"])
                vo = feats.pooler_output if hasattr(feats, "pooler_output") else feats
                if isinstance(vo, (list, tuple)):
                    vo = torch.cat(list(vo), 0)
                vo = vo.float().numpy()
                save(os.path.join(d, "vision_out.f32"), vo, "<f4")
                case["files"]["vision_out.f32"] = list(vo.shape)
                case["grid_thw"] = inputs["image_grid_thw"].tolist()
            out = model(**inputs)
            lg = out.logits[0, -1].float().numpy()
            if not qwen:
                save(os.path.join(d, "logits.f32"), lg, "<f4")
                case["files"]["logits.f32"] = [int(lg.shape[0])]
            gen = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW,
                                 repetition_penalty=1.0, temperature=None, top_k=None,
                                 top_p=None)
            g = gen[0, ids.shape[0]:].numpy()
            eos = model.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos])
            # generate() pads after an early stop: keep up to and including the first stop id
            keep = []
            for t in g.tolist():
                keep.append(t)
                if t in eos:
                    break
            save(os.path.join(d, "generated.i32"), np.array(keep), "<i4")
            case["files"]["generated.i32"] = [len(keep)]
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=2, sort_keys=True)
            f.write("\n")
        manifest.append((name, case))
        print(f"{name}: {len(ids)} prompt ids, generated {keep}", file=sys.stderr)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("# Oracle goldens (MANIFEST)\n\nGenerated by `tools/oracle/setup && tools/oracle/gen`"
                " (tools/oracle/gen.py) from transformers' `VideoLlama3ForConditionalGeneration`"
                " + `AutoProcessor`, float32 on the CPU.\n\n")
        f.write(f"- tiny model: `vl3 model tiny {' '.join(TINY_ARGS)}` (regenerated by the test);"
                " the qwen_* cases add `--tokenizer ../shared/data/qwen2.5-tokenizer`\n")
        f.write(f"- python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
                f"{transformers.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}\n")
        f.write(f"- image processor: `{type(proc.image_processor).__name__}`\n")
        f.write("- pixel_values are rounded to bf16 before the vision tower (as the bf16 checkpoints"
                " do); the dumped pixel_values are the processor's float32 output\n")
        f.write(f"- greedy: do_sample=False, repetition_penalty 1, max_new_tokens {MAX_NEW}, "
                f"stop ids {sorted(eos)}\n\n| case | vl3 run args | prompt ids | generated |\n"
                "|---|---|---|---|\n")
        for name, c in manifest:
            f.write(f"| {name} | `{' '.join(c['vl3_args'])}` | {c['files']['input_ids.i32'][0]}"
                    f" | {c['files']['generated.i32'][0]} |\n")


if __name__ == "__main__":
    main()
