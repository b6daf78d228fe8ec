#!/usr/bin/env python3
"""gen_golden.py: golden LLM outputs for `vl3 run --dump` from the official transformers code.

Runs on a machine with PyTorch + transformers (the GPU machine; not the build machine, which has
neither transformers nor network access to PyPI). See tools/gen_golden.md.

  gen_golden.py gen --model DIR --out OUT --prompt TEXT [--system-prompt none|default|TEXT]
                    [--max-new-tokens N] [--dtype f32|bf16] [--device cpu|cuda]
                    [--remote-code DIR] [--ids-from DUMPDIR]
  gen_golden.py compare GOLDEN_DIR DUMP_DIR [--logits-tol 1e-4]

`gen` loads a checkpoint written by `vl3 model tiny` (either layout) with the official
implementation:
  * native layout (model_type video_llama_3): transformers' VideoLlama3ForConditionalGeneration;
  * remote layout (model_type videollama3_qwen2): the DAMO hub remote code with
    trust_remote_code=True. Our tiny checkpoints carry the auto_map but not the .py files, so
    --remote-code names a directory holding them (a snapshot of DAMO-NLP-SG/VideoLLaMA3-2B: at
    least configuration_videollama3.py, modeling_videollama3.py, modeling_videollama3_encoder.py
    and their imports); the checkpoint is copied to a temporary directory with those files added.
It renders the chat template of spec §7.1 around the prompt (or takes input ids from one of our
dumps with --ids-from, which isolates the model from the tokenizer), computes the logits of the
last prompt position with one forward pass, and runs greedy decoding (argmax, no repetition
penalty, full recompute each step, stop on the generation config's eos ids) for --max-new-tokens
steps. It writes our --dump format:
  input_ids.i32  int32 little-endian [n_prompt]
  logits.f32     float32 little-endian [vocab_rows]   (last prompt position)
  generated.i32  int32 little-endian [n_generated]    (the stop id included when one ended it)
  meta.json      shapes, dtypes, counts, prompt text (same keys as vl3 run's)
and provenance.json beside them (library versions, device, dtype, command line, checksums of the
checkpoint files and of the remote code).

`compare` needs only numpy: relative L2 and max-abs error of the logits, equality of the ids.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile

DAMO_SYSTEM = ("You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help "
               "people understand images and videos.")


def render_prompt(prompt, system):
    """Chat template of spec §7.1 for a text-only user turn with the generation prompt."""
    text = ""
    if system == "default":
        text += "<|im_start|>system\n" + DAMO_SYSTEM + "<|im_end|>\n"
    elif system != "none":
        text += "<|im_start|>system\n" + system + "<|im_end|>\n"
    text += "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
    return text


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_raw(path, arr, dtype):
    import numpy as np
    np.asarray(arr, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tofile(path)


def load_model(args, layout, torch):
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    if layout == "native":
        from transformers import VideoLlama3ForConditionalGeneration
        model = VideoLlama3ForConditionalGeneration.from_pretrained(args.model, torch_dtype=dtype)
        return model, args.model, None
    if not args.remote_code:
        sys.exit("gen_golden.py: the remote layout needs --remote-code DIR (the DAMO .py files)")
    from transformers import AutoModelForCausalLM
    tmp = tempfile.mkdtemp(prefix="vl3golden-")
    for name in os.listdir(args.model):
        src = os.path.join(args.model, name)
        if os.path.isfile(src):
            os.symlink(os.path.abspath(src), os.path.join(tmp, name))
    code = {}
    for name in sorted(os.listdir(args.remote_code)):
        if name.endswith(".py"):
            shutil.copy(os.path.join(args.remote_code, name), tmp)
            code[name] = sha256_file(os.path.join(args.remote_code, name))
    model = AutoModelForCausalLM.from_pretrained(tmp, trust_remote_code=True, torch_dtype=dtype)
    return model, tmp, code


def cmd_gen(args):
    import numpy as np
    import torch
    import transformers

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    layout = {"video_llama_3": "native", "videollama3_qwen2": "remote"}.get(cfg.get("model_type"))
    if layout is None:
        sys.exit("gen_golden.py: unknown model_type %r" % cfg.get("model_type"))
    gen_cfg = {}
    gpath = os.path.join(args.model, "generation_config.json")
    if os.path.exists(gpath):
        with open(gpath) as f:
            gen_cfg = json.load(f)
    eos = gen_cfg.get("eos_token_id", cfg.get("eos_token_id"))
    if eos is None and "text_config" in cfg:
        eos = cfg["text_config"].get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else ([eos] if eos is not None else []))

    torch.manual_seed(0)
    model, load_dir, remote_code = load_model(args, layout, torch)
    model.eval().to(args.device)

    prompt_text = render_prompt(args.prompt, args.system_prompt)
    if args.ids_from:
        ids = np.fromfile(os.path.join(args.ids_from, "input_ids.i32"), dtype="<i4").tolist()
    else:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(args.model)
        ids = tok(prompt_text, add_special_tokens=False)["input_ids"]

    def last_logits(seq):
        with torch.no_grad():
            x = torch.tensor([seq], dtype=torch.long, device=args.device)
            out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
            return out.logits[0, -1].float().cpu().numpy()

    logits = last_logits(ids)
    seq, generated = list(ids), []
    cur = logits
    for _ in range(args.max_new_tokens):
        nxt = int(np.argmax(cur))  # first maximum, as torch.argmax
        generated.append(nxt)
        seq.append(nxt)
        if nxt in eos_ids or len(generated) == args.max_new_tokens:
            break
        cur = last_logits(seq)

    os.makedirs(args.out, exist_ok=True)
    write_raw(os.path.join(args.out, "input_ids.i32"), ids, "int32")
    write_raw(os.path.join(args.out, "logits.f32"), logits, "float32")
    write_raw(os.path.join(args.out, "generated.i32"), generated, "int32")
    meta = {
        "format": "vl3-run-dump",
        "version": 1,
        "producer": "tools/gen_golden.py",
        "model": os.path.abspath(args.model),
        "layout": layout,
        "vocab_rows": int(logits.shape[0]),
        "n_prompt": len(ids),
        "n_generated": len(generated),
        "stopped_by_eos": bool(generated and generated[-1] in eos_ids),
        "prompt_text": prompt_text,
        "sampling": {"greedy": True, "repetition_penalty": 1.0,
                     "max_new_tokens": args.max_new_tokens, "stop_ids": sorted(eos_ids)},
        "files": {
            "input_ids.i32": {"dtype": "int32", "shape": [len(ids)], "byte_order": "little"},
            "logits.f32": {"dtype": "float32", "shape": [int(logits.shape[0])],
                           "byte_order": "little"},
            "generated.i32": {"dtype": "int32", "shape": [len(generated)],
                              "byte_order": "little"},
        },
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    ckpt = {n: sha256_file(os.path.join(args.model, n)) for n in sorted(os.listdir(args.model))
            if os.path.isfile(os.path.join(args.model, n))}
    prov = {
        "generator": "tools/gen_golden.py",
        "command": sys.argv,
        "date_utc": datetime.datetime.utcnow().isoformat() + "Z",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": args.device + (" " + torch.cuda.get_device_name(0)
                                 if args.device == "cuda" else ""),
        "dtype": args.dtype,
        "layout": layout,
        "implementation": ("transformers VideoLlama3ForConditionalGeneration" if layout == "native"
                           else "DAMO remote code (trust_remote_code)"),
        "remote_code_sha256": remote_code,
        "checkpoint_sha256": ckpt,
        "ids_from": args.ids_from,
    }
    with open(os.path.join(args.out, "provenance.json"), "w") as f:
        json.dump(prov, f, indent=2, sort_keys=True)
    if load_dir != args.model:
        shutil.rmtree(load_dir, ignore_errors=True)
    print("wrote %s: %d prompt ids, %d generated, vocab rows %d" %
          (args.out, len(ids), len(generated), logits.shape[0]))


def cmd_compare(args):
    import numpy as np
    g, d = args.golden, args.dump
    gi = np.fromfile(os.path.join(g, "input_ids.i32"), dtype="<i4")
    di = np.fromfile(os.path.join(d, "input_ids.i32"), dtype="<i4")
    gl = np.fromfile(os.path.join(g, "logits.f32"), dtype="<f4").astype(np.float64)
    dl = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4").astype(np.float64)
    gg = np.fromfile(os.path.join(g, "generated.i32"), dtype="<i4")
    dg = np.fromfile(os.path.join(d, "generated.i32"), dtype="<i4")
    ok = True
    if gi.shape != di.shape or not np.array_equal(gi, di):
        print("input_ids differ: golden %d ids, dump %d ids" % (gi.size, di.size))
        ok = False
    else:
        print("input_ids equal (%d)" % gi.size)
    if gl.shape != dl.shape:
        print("logits shapes differ: %s vs %s" % (gl.shape, dl.shape))
        ok = False
    else:
        rel = np.linalg.norm(gl - dl) / np.linalg.norm(gl)
        mx = np.max(np.abs(gl - dl))
        print("logits rel_l2 %.3g max_abs %.3g (tol %.3g); argmax %d vs %d" %
              (rel, mx, args.logits_tol, int(np.argmax(gl)), int(np.argmax(dl))))
        ok = ok and rel <= args.logits_tol
    if not np.array_equal(gg, dg):
        n = min(gg.size, dg.size)
        first = next((i for i in range(n) if gg[i] != dg[i]), n)
        print("generated ids differ at %d: golden %s dump %s" %
              (first, gg[:first + 3].tolist(), dg[:first + 3].tolist()))
        ok = False
    else:
        print("generated ids equal (%d)" % gg.size)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("gen", help="run the official implementation and write a golden dump")
    a.add_argument("--model", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--prompt", required=True)
    a.add_argument("--system-prompt", default="none")
    a.add_argument("--max-new-tokens", type=int, default=16)
    a.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    a.add_argument("--device", default="cpu")
    a.add_argument("--remote-code", help="directory with the DAMO remote-code .py files")
    a.add_argument("--ids-from", help="take input ids from this vl3 run --dump directory")
    c = sub.add_parser("compare", help="compare a golden dump with a vl3 run --dump")
    c.add_argument("golden")
    c.add_argument("dump")
    c.add_argument("--logits-tol", type=float, default=1e-4)
    args = ap.parse_args()
    if args.cmd == "gen":
        cmd_gen(args)
        return 0
    return cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
