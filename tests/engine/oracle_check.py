"""oracle_check.py: compare `vl3 run --dump` with the transformers goldens (tests/fixtures/oracle).

Usage: oracle_check.py VL3 FIXTURES WORKDIR [CASE...]. Cases marked qwen_tokenizer use the real
Qwen2.5 tokenizer from $VL3_SHARED_DIR/data/qwen2.5-tokenizer (default <source>/../shared); when
it is absent and only such cases were asked for, the exit status is 77 (skipped); so are video
cases whose clip is in ../shared/data/media when that is absent. Regenerates the tiny models with
the arguments of the generators (read from README.md / README_remote.md, plus the files of
model_extra*.json), runs each case's `vl3 run` with --greedy --dump and checks: input_ids and
generated ids identical; pixel_values bit-exact; vision_out and logits within relative L2
1e-5; kept tokens per frame and the timestamps' text for videos. Known differences (KNOWN) would be bounded instead. numpy only (no torch).
Exit 0 = all pass.
"""
import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np

TOL = 1e-5
# Known differences, each explained in docs/oracle.md, would be listed in KNOWN (none left: alpha
# is composited onto white for native-layout inputs as transformers does, and the remote float32
# path's cases run `vl3 run --f32-pixels`, the encoder taking pixel_values unrounded as there).
# (The native resize, torchvision's on uint8 tensors, is reproduced bit for bit since vl3 resizes
# native-layout inputs with ATen's kernel: no tolerance for it any more.)
KNOWN = {}
SKIP = 77


def load_gold(d, name, dtype):
    with gzip.open(os.path.join(d, name + ".gz"), "rb") as f:
        return np.frombuffer(f.read(), dtype=dtype)


def rel_l2(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main():
    vl3, fix, work = sys.argv[1:4]
    only = set(sys.argv[4:])
    readme = open(os.path.join(fix, "README.md")).read()
    tiny = re.search(r"tiny model: `vl3 model tiny ([^`]*)`", readme).group(1).split()
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shared = os.environ.get("VL3_SHARED_DIR", os.path.join(src, "..", "shared"))
    qtok = os.path.join(shared, "data", "qwen2.5-tokenizer")
    media = os.path.join(shared, "data", "media")
    extra_path = os.path.join(fix, "model_extra.json")
    model_extra = json.load(open(extra_path)) if os.path.exists(extra_path) else {}
    # remote (DAMO) goldens: r_* cases with "layout": "remote" (tools/oracle/gen_remote.py)
    rreadme = os.path.join(fix, "README_remote.md")
    rtiny = (re.search(r"tiny model: `vl3 model tiny ([^`]*)`", open(rreadme).read())
             .group(1).split() if os.path.exists(rreadme) else [])
    rextra_path = os.path.join(fix, "model_extra_remote.json")
    rextra = json.load(open(rextra_path)) if os.path.exists(rextra_path) else {}
    os.makedirs(work, exist_ok=True)
    models = {}

    def model_for(qwen, remote=False):
        layout = "remote" if remote else "native"
        if (layout, qwen) not in models:
            m = os.path.join(work, f"tiny-{layout}-qwen" if qwen else f"tiny-{layout}")
            extra = ["--tokenizer", qtok] if qwen else []
            subprocess.run([vl3, "model", "tiny", "--out", m] + (rtiny if remote else tiny) + extra,
                           check=True, stdout=subprocess.DEVNULL)
            for fn, content in (rextra if remote else model_extra).items():
                with open(os.path.join(m, fn), "w") as f:
                    json.dump(content, f, indent=2)
            models[(layout, qwen)] = m
        return models[(layout, qwen)]

    fails = 0
    ran = 0
    names = sorted(n for n in os.listdir(fix) if os.path.isdir(os.path.join(fix, n)))
    for name in names:
        if only and name not in only:
            continue
        d = os.path.join(fix, name)
        case = json.load(open(os.path.join(d, "case.json")))
        if case.get("qwen_tokenizer") and not os.path.isdir(qtok):
            print(f"skip {name}: {qtok} is not available")
            continue
        args = list(case["vl3_args"])
        if case.get("layout") == "remote" and case.get("path") == "f32":
            args.append("--f32-pixels")  # the float32 path: pixel_values not rounded
        if "--video" in args:
            i = args.index("--video") + 1
            if args[i].startswith("media:"):
                args[i] = os.path.join(media, args[i][6:])
                if not os.path.exists(args[i]):
                    print(f"skip {name}: {args[i]} is not available")
                    continue
            else:
                args[i] = os.path.join(d, args[i])
        if "--image" in args:
            i = args.index("--image") + 1
            args[i] = os.path.join(d, args[i])
        remote = case.get("layout") == "remote"
        model = model_for(bool(case.get("qwen_tokenizer")), remote)
        ran += 1
        out = os.path.join(work, name)
        cmd = [vl3, "run", "--model", model, "--greedy", "--max-new-tokens",
               str(case["max_new_tokens"]), "--dump", out] + args
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meta = json.load(open(os.path.join(out, "meta.json")))
        msgs = []
        known = KNOWN.get(name)
        for f, shape in case["files"].items():
            tol = TOL
            dt = "<i4" if f.endswith(".i32") else "<f4"
            g = load_gold(d, f, dt)
            o = np.fromfile(os.path.join(out, f), dtype=dt)
            if list(meta["files"][f]["shape"]) != shape and o.size != g.size:
                msgs.append(f"{f}: shape {meta['files'][f]['shape']} != golden {shape}")
                continue
            if dt == "<i4":
                if not np.array_equal(o, g):
                    msgs.append(f"{f}: ours {o.tolist()} != golden {g.tolist()}")
            elif f == "pixel_values.f32":
                if not np.array_equal(o.view("<u4"), g.view("<u4")):
                    ulp = np.abs(o.view("<i4").astype(np.int64) - g.view("<i4").astype(np.int64))
                    mx = float(np.abs(o - g).max())
                    msgs.append(f"{f}: not bit-exact: {int((ulp > 0).sum())}/{o.size} differ, "
                                f"max {int(ulp.max())} ulp, max abs {mx:.3g}")
            else:
                e = rel_l2(o, g)
                if not e <= tol:
                    msgs.append(f"{f}: rel L2 {e:.3g} > {tol}")
                elif known:
                    print(f"     {f}: rel L2 {e:.3g} (known: {known})")
        vis = meta.get("vision") or {}
        if "kept_per_frame" in case and vis.get("kept_per_frame") != case["kept_per_frame"]:
            msgs.append(f"kept tokens per frame: ours {vis.get('kept_per_frame')} != golden "
                        f"{case['kept_per_frame']}")
        if "timestamps_text" in case:
            ours = ["%.1f" % t for t in vis.get("timestamps", [])]
            if ours != case["timestamps_text"]:
                msgs.append(f"timestamps: ours {ours} != golden {case['timestamps_text']}")
        print(("FAIL " if msgs else "ok   ") + name + (f" (known: {known})" if known else ""))
        for m in msgs:
            print("     " + m)
        fails += bool(msgs)
    print(f"{fails} of {ran} case(s) failed")
    if not ran:
        return SKIP
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
