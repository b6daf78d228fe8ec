"""tools/oracle/gen_remote.py: golden dumps from the DAMO-NLP-SG/VideoLLaMA3 remote code.

Run through `tools/oracle/gen --remote` inside tools/oracle/.venv-remote (transformers 4.46.3,
torch 2.4, the repository's inference/transformers_api files in .venv-remote/damo, put there by
tools/oracle/setup). Writes tests/fixtures/oracle/r_<case>/ in the same format as gen.py.

The tiny remote checkpoint (`vl3 model tiny`, default layout) gets the DAMO .py files beside its
config (as on the hub, loaded with trust_remote_code) and the preprocessor_config.json of
model_extra_remote.json (smaller token budgets, so that the goldens stay small; vl3 reads the
same file). The checkpoint has no chat template: CHAT_TEMPLATE below is written from the spec
(§7.1) and given to the processor, which then runs the README's path:
processor(conversation=..., add_system_prompt=..., add_generation_prompt=True), its own image
loading (PIL convert('RGB')) and video loading (ffmpeg fps=F:round=down, max_frames).

Two paths: "readme" casts pixel_values to bf16 before the model as the README does (DiffFP then
compares bf16 pixels: vl3 --difffp-bf16); "f32" keeps the processor's float32 pixel_values (the
vision tower sees them unrounded; vl3 rounds to bf16 in every mode, a documented difference).
The model runs in float32 (the bf16 weights widened) on the CPU with eager attention (the
remote VisionSdpaAttention calls a missing self.proj).

input_ids are the ids after DiffFP (the model's _compress_visual_tokens), as vl3 dumps them;
vision_out is the projector output of the kept tokens.
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import PIL
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoProcessor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen as G  # noqa: E402  (the inputs: images, clips, task texts)

TINY_ARGS = ["--seed", "3", "--std", "0.1"]

# Written from spec §7.1 (not copied): strings only in expressions, so trim_blocks/lstrip_blocks
# change nothing. round(1) on the processor's numpy float64 timestamps, as the hub template.
CHAT_TEMPLATE = (
    "{%- if add_system_prompt and messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n' + '@SYSTEM@' + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}"
    "{%- else -%}{%- for c in m['content'] -%}"
    "{%- if c['type'] == 'text' -%}{{- c['text'] -}}"
    "{%- elif c['type'] == 'image' -%}"
    "{%- if 'timestamp' in c -%}{{- 'Time ' + (c['timestamp'] | round(1) | string) + 's: ' -}}"
    "{%- endif -%}{{- '<image>\\n' -}}"
    "{%- elif c['type'] == 'video' -%}"
    "{%- for i in range(c['num_frames']) -%}"
    "{%- if 'timestamps' in c -%}"
    "{{- 'Time ' + (c['timestamps'][i] | round(1) | string) + 's:' -}}{%- endif -%}"
    "{%- if i < c['num_frames'] - 1 -%}{{- '<image>,' -}}{%- else -%}{{- '<image>\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
).replace("@SYSTEM@", G.SYSTEM)


def remote_preproc(model_dir):
    """vl3's remote preprocessor_config.json with small token budgets (min 4, max 64 merged
    tokens per call), so that video goldens stay small, and its tokenizer_config.json with
    padding_side."""
    with open(os.path.join(model_dir, "preprocessor_config.json")) as f:
        pre = json.load(f)
    pre["min_tokens"] = 4
    pre["max_tokens"] = 64
    # the hub's tokenizer_config.json has padding_side (the DAMO processor pops it from the
    # text kwargs it takes from the tokenizer's init kwargs; KeyError without it)
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        tok = json.load(f)
    tok["padding_side"] = "right"
    return {"preprocessor_config.json": pre, "tokenizer_config.json": tok}


def varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k):
    """flash_attn_varlen_func (non-causal, scale d^-0.5) in plain torch: attention inside each
    [cu[i], cu[i+1]) segment (one frame) only. q, k, v: (total, heads, dim)."""
    out = torch.empty_like(q)
    scale = q.shape[-1] ** -0.5
    for i in range(len(cu_q) - 1):
        s, e = int(cu_q[i]), int(cu_q[i + 1])
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
        w = torch.softmax((qs @ ks.transpose(1, 2)).float() * scale, dim=-1).to(q.dtype)
        out[s:e] = (w @ vs).transpose(0, 1)
    return out


def fix_reference(model, proc):
    """Work around two bugs of the GitHub copy (spec §3 and §10) so that the reference computes
    what the model was trained for: (1) its eager VisionAttention adds the boolean block mask
    (+1 inside a frame, 0 outside) instead of masking, so frames attend to each other (only the
    flash-attention path, unavailable on the CPU, is right): every vision attention layer runs
    the DAMO VisionFlashAttention2.forward with varlen_attention as its kernel; (2) the image
    processor reads PIL sizes as (height, width) = image.size, swapping the aspect ratio of
    images given by path: load_images returns numpy arrays (as the repository's commented-out
    cv2 route and its training code do)."""
    n = 0
    for m in model.modules():
        if type(m).__name__ == "VisionAttention":
            mod = sys.modules[type(m).__module__]
            mod.flash_attn_varlen_func = varlen_attention
            m.__class__ = mod.VisionFlashAttention2
            n += 1
    assert n > 0, "no VisionAttention layer found"
    orig = proc.load_images

    def load_images(path):
        return [np.array(x) if isinstance(x, PIL.Image.Image) else x for x in orig(path)]
    proc.load_images = load_images


def cases():
    """name -> dict(kind, input, vl3 args, user text, system, fps, max_frames, paths)."""
    q = "What happens in the video?"
    out = {
        "text_only": {"kind": "text", "args": ["--prompt", "Hello, who are you?"],
                      "text": "Hello, who are you?"},
        "text_system": {"kind": "text", "args": ["--prompt", "Hello, who are you?",
                                                 "--system-prompt", "default"],
                        "text": "Hello, who are you?", "system": True},
        "photo_64x48": {"kind": "image", "img": G.img_photo(64, 48, 1),
                        "args": ["--prompt", "What is in the picture?"],
                        "text": "What is in the picture?"},
        "odd_37x211": {"kind": "image", "img": G.img_photo(37, 211, 2),
                       "args": ["--prompt", "What is in the picture?"],
                       "text": "What is in the picture?"},
        "textpage_ocr_system": {"kind": "image", "img": G.img_text(140, 60),
                                "args": ["--task", "ocr", "--system-prompt", "default"],
                                "text": G.OCR, "system": True},
        "gray_chart_qa": {"kind": "image", "img": G.img_gray(50, 30),
                          "args": ["--task", "chart_qa", "--question", G.CHART_Q],
                          "text": G.CHART_Q + "\nAnswer the question using a single word or "
                          "phrase."},
        "rgba_qa": {"kind": "image", "img": G.img_rgba(45, 33),
                    "args": ["--task", "qa", "--question", "Is it red?"], "text": "Is it red?"},
        "v_rabbit_caption": {"kind": "video", "video": "media:rabbit320.mp4", "fps": 1,
                             "max_frames": 180, "args": ["--task", "caption"],
                             "text": G.VCAPTION},
        "v_frog_max8": {"kind": "video", "video": "media:frog.mp4", "fps": 2, "max_frames": 8,
                        "args": ["--prompt", q], "text": q},
        "v_odd7fps": {"kind": "video", "video": "odd7fps.mp4", "fps": 1, "max_frames": 180,
                      "args": ["--prompt", q], "text": q},
        "v_offset": {"kind": "video", "video": "offset.mp4", "fps": 1, "max_frames": 180,
                     "args": ["--prompt", q], "text": q},
        "v_long_max12": {"kind": "video", "video": "long.mp4", "fps": 1, "max_frames": 12,
                         "args": ["--prompt", q, "--system-prompt", "default"], "text": q,
                         "system": True},
    }
    # both paths for every case with pixels; text cases once
    res = {}
    for n, c in out.items():
        if c["kind"] == "text":
            res["r_" + n] = dict(c, path="readme")
        else:
            res["r_" + n] = dict(c, path="readme")
            res["r_" + n + "_f32"] = dict(c, path="f32")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vl3", default="build/bin/vl3")
    ap.add_argument("--out", default="tests/fixtures/oracle")
    ap.add_argument("--work", default="/tmp/vl3-oracle-work")
    ap.add_argument("--damo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   ".venv-remote", "damo"))
    ap.add_argument("--media", default="../shared/data/media")
    ap.add_argument("--no-fix", action="store_true",
                    help="run the GitHub copy as it is (see fix_reference; for the docs only)")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.damo, "processing_videollama3.py")):
        print(f"gen_remote: no DAMO remote code in {a.damo} (tools/oracle/setup remote with "
              "VL3_DAMO_SRC): remote goldens not regenerated", file=sys.stderr)
        return 0
    torch.manual_seed(0)
    md = os.path.join(a.work, "tiny-remote")
    os.makedirs(a.work, exist_ok=True)
    subprocess.run([a.vl3, "model", "tiny", "--out", md] + TINY_ARGS, check=True)
    extra = remote_preproc(md)
    with open(os.path.join(a.out, "model_extra_remote.json"), "w") as f:
        json.dump(extra, f, indent=2, sort_keys=True)
        f.write("\n")
    for fn, content in extra.items():
        with open(os.path.join(md, fn), "w") as f:
            json.dump(content, f, indent=2)
    for fn in os.listdir(a.damo):
        if fn.endswith(".py"):
            shutil.copy(os.path.join(a.damo, fn), os.path.join(md, fn))
    proc = AutoProcessor.from_pretrained(md, trust_remote_code=True, chat_template=CHAT_TEMPLATE)
    model = AutoModelForCausalLM.from_pretrained(md, trust_remote_code=True,
                                                 torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    if not a.no_fix:
        fix_reference(model, proc)
    image_token = model.config.image_token_index
    orig_mask = model._get_compression_mask
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    for name, c in cases().items():
        if a.cases and name not in a.cases:
            continue
        d = os.path.join(a.out, name)
        kind = c["kind"]
        content = []
        vl3_args = []
        if kind == "image":
            os.makedirs(d, exist_ok=True)
            c["img"].save(os.path.join(d, "input.png"))
            content.append({"type": "image", "image": {"image_path": os.path.join(d, "input.png")}})
            vl3_args = ["--image", "input.png"]
        elif kind == "video":
            v = c["video"]
            if v.startswith("media:"):
                path = os.path.join(a.media, v[6:])
                if not os.path.exists(path):
                    print(f"skip {name}: {path} is not available", file=sys.stderr)
                    continue
                os.makedirs(d, exist_ok=True)
            else:
                os.makedirs(d, exist_ok=True)
                path = os.path.join(d, v)
                G.make_clip(path, G.CLIPS[v])
            content.append({"type": "video", "video": {"video_path": path, "fps": c["fps"],
                                                       "max_frames": c["max_frames"]}})
            vl3_args = ["--video", v, "--fps", str(c["fps"]), "--max-frames",
                        str(c["max_frames"])]
        os.makedirs(d, exist_ok=True)
        content.append({"type": "text", "text": c["text"]})
        conv = [{"role": "user", "content": content}]
        inputs = proc(conversation=copy.deepcopy(conv), add_system_prompt=bool(c.get("system")),
                      add_generation_prompt=True, return_tensors="pt")
        readme = c["path"] == "readme"
        if readme:
            vl3_args += ["--difffp-bf16"] if kind == "video" else []
        case = {"max_new_tokens": G.MAX_NEW, "files": {}, "qwen_tokenizer": False,
                "layout": "remote", "path": c["path"], "vl3_args": vl3_args + c["args"]}
        ids = inputs["input_ids"]
        with torch.no_grad():
            kw = {"input_ids": ids, "attention_mask": inputs["attention_mask"]}
            if kind != "text":
                pv = inputs["pixel_values"]
                dump_pv = pv.numpy().astype("<f4")
                if readme:
                    # README: pixel_values.to(torch.bfloat16) into a bf16 model. The model here
                    # is float32 (so that logits compare at 1e-5): it gets the bf16-rounded
                    # values, and DiffFP (the model's own _get_compression_mask) gets a real
                    # bf16 tensor, as in the README's bf16 model
                    pv = pv.to(torch.bfloat16).float()
                    model._get_compression_mask = lambda x, *r, **k: orig_mask(
                        x.to(torch.bfloat16), *r, **k)
                else:
                    model._get_compression_mask = orig_mask
                kw.update(pixel_values=pv, grid_sizes=inputs["grid_sizes"],
                          merge_sizes=inputs["merge_sizes"], modals=inputs["modals"])
                # what the model does in prepare_inputs_labels_for_multimodal, step by step,
                # to dump the kept ids and the kept projector rows
                feats = model.encode_images(pv, inputs["grid_sizes"], inputs["merge_sizes"])
                npatch = inputs["grid_sizes"].prod(dim=1).div(inputs["merge_sizes"] ** 2).long()
                mask = model._get_compression_mask(pv, npatch, inputs["grid_sizes"],
                                                   inputs["merge_sizes"], inputs["modals"])
                flat = ids.view(-1)
                sel = flat == image_token
                keep = torch.logical_not(sel)
                keep[sel] = mask
                kept_ids = flat[keep].numpy()
                vo = feats[mask].float().numpy()
                G.save(os.path.join(d, "pixel_values.f32"), dump_pv, "<f4")
                case["files"]["pixel_values.f32"] = list(dump_pv.shape)
                G.save(os.path.join(d, "vision_out.f32"), vo, "<f4")
                case["files"]["vision_out.f32"] = list(vo.shape)
                case["grid_thw"] = inputs["grid_sizes"].tolist()
                if kind == "video":
                    g = inputs["grid_sizes"].tolist()
                    m = inputs["merge_sizes"].tolist()
                    per = [gg[1] * gg[2] // (mm * mm) for gg, mm in zip(g, m)]
                    case["kept_per_frame"] = [int(x) for x in mask.view(-1, per[0]).sum(1)]
            else:
                kept_ids = ids[0].numpy()
            G.save(os.path.join(d, "input_ids.i32"), kept_ids, "<i4")
            case["files"]["input_ids.i32"] = [int(kept_ids.shape[0])]
            out = model(**kw)
            lg = out.logits[0, -1].float().numpy()
            G.save(os.path.join(d, "logits.f32"), lg, "<f4")
            case["files"]["logits.f32"] = [int(lg.shape[0])]
            gen = model.generate(**kw, do_sample=False, max_new_tokens=G.MAX_NEW,
                                 repetition_penalty=1.0, temperature=None, top_k=None,
                                 top_p=None)
            keepg = []
            for t in gen[0].tolist():
                keepg.append(t)
                if t in eos:
                    break
            G.save(os.path.join(d, "generated.i32"), np.array(keepg), "<i4")
            case["files"]["generated.i32"] = [len(keepg)]
        case["prompt_text"] = proc.tokenizer.decode(kept_ids)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        print(f"{name}: {len(kept_ids)} prompt ids, generated {keepg}", file=sys.stderr)
    with open(os.path.join(a.out, "README_remote.md"), "w") as f:
        f.write("# Remote oracle goldens (r_*)\n\nGenerated by `tools/oracle/setup remote &&"
                " tools/oracle/gen --remote` (tools/oracle/gen_remote.py) from the DAMO-NLP-SG/"
                "VideoLLaMA3 inference/transformers_api code (sha256 in tools/oracle/damo.sha256),"
                " float32 on the CPU, eager attention.\n\n")
        f.write(f"- tiny model: `vl3 model tiny {' '.join(TINY_ARGS)}` + the DAMO .py files +"
                " model_extra_remote.json\n")
        f.write(f"- python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
                f"{transformers.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}\n")
        f.write(f"- greedy: do_sample=False, repetition_penalty 1, max_new_tokens {G.MAX_NEW}, "
                f"stop ids {sorted(eos)}\n- `_f32` cases: float32 pixel_values; the others: bf16"
                " pixel_values (README), DiffFP on the bf16 tensor, the rest in float32 on the"
                " bf16-rounded values\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
