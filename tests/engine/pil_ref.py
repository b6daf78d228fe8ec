#!/usr/bin/python3
"""pil_ref.py: independent Python reference for the vision preprocessing tests (needs PIL+numpy,
i.e. /usr/bin/python3).

It generates test images (PNG RGB/RGBA/P/L/LA/1, WebP, JPEG) of several sizes and aspect ratios,
then runs the official processor steps on them the way the DAMO processor does:
Image.open(p).convert('RGB'), the resize rule of simple_batched_resize / batched_resize
(written here from the spec, §3.1), PIL resize BICUBIC on uint8, transformers' rescale (float64
multiply, cast to float32) and normalize ((x - 0.5) / 0.5 in float32), and the merge-aware patch
flattening (t, gh/m, gw/m, m, m, C, 14, 14).

Usage: pil_ref.py OUTDIR [images|rules]   or   pil_ref.py pv IMAGE OUT [native]
With "rules", only rules.txt is written: random calls through the resize rules (simple, mixed,
native smart_resize) with the Python results.
With "images", only the images are written, plus images.txt listing "file width height" and
file.rgb holding PIL's convert('RGB') bytes of each (for the decoder test).
Writes into OUTDIR, for each case N: caseN.json (items: file, w, h, frames, is_video, merge, and
the reference grid), caseN.rgb (every frame of every item after convert('RGB'), concatenated) and
caseN.pv (float32 pixel_values, little endian). Also writes the image files themselves.
"""
import json
import math
import os
import sys

import numpy as np
from PIL import Image

PATCH = 14


def smooth_noise(w, h, seed, mode="RGB", noise=25):
    """Deterministic image with both smooth gradients and sharp edges (stress the filter)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        f1, f2 = rng.uniform(0.005, 0.08, 2)
        v = 127.5 + 90 * np.sin(xx * f1 + c) * np.cos(yy * f2 - c)
        v += rng.normal(0, noise, size=(h, w))
        v[(xx.astype(int) // 7 + yy.astype(int) // 5) % 9 == 0] = 255 * (c % 2)
        chans.append(v)
    a = np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


def py_resize_simple(sizes, frames, factor, min_tokens=16, max_tokens=16384):
    min_pixels = min_tokens * factor * factor
    max_pixels = max_tokens * factor * factor
    n = sum(frames)
    out = []
    for (H, W) in sizes:
        h = round(H / factor) * factor
        w = round(W / factor) * factor
        if h * w > max_pixels // n:
            beta = math.sqrt((H * W) / (max_pixels // n))
            h = math.floor(H / beta / factor) * factor
            w = math.floor(W / beta / factor) * factor
        if h * w < min_pixels:
            beta = math.sqrt(min_pixels / (H * W))
            h = math.ceil(H * beta / factor) * factor
            w = math.ceil(W * beta / factor) * factor
        out.append((h, w))
    return out


def py_resize_mixed(sizes, frames, factors, max_tokens=16384):
    total = 0
    for (H, W), t, f in zip(sizes, frames, factors):
        total += t * math.ceil(H / f) * math.ceil(W / f)
    out = []
    for (H, W), f in zip(sizes, factors):
        if total > max_tokens:
            beta = math.sqrt(total / max_tokens)
            out.append((math.floor(H / beta / f) * f, math.floor(W / beta / f) * f))
        else:
            out.append((round(H / f) * f, round(W / f) * f))
    return out


def py_smart_resize(H, W, factor, min_pixels, max_pixels):
    if max(H, W) / min(H, W) > 200:
        return (-1, -1)
    h = round(H / factor) * factor
    w = round(W / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt((H * W) / max_pixels)
        h = max(factor, math.floor(H / beta / factor) * factor)
        w = max(factor, math.floor(W / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (H * W))
        h = math.ceil(H * beta / factor) * factor
        w = math.ceil(W * beta / factor) * factor
    return (h, w)


def write_rules(path):
    """Random calls through the three resize rules: one line per call,
    'rule n f0 frames0 H0 W0 ... -> h0 w0 ...' (rule: simple, mixed, native)."""
    import random
    rnd = random.Random(1234)
    with open(path, "w") as f:
        for k in range(3000):
            rule = ("simple", "mixed", "native")[k % 3]
            n = rnd.randint(1, 3)
            items = []
            for _ in range(n):
                m = rnd.choice((1, 2))
                t = rnd.choice((1, 1, 2, 7, 60, 180)) if m == 2 else 1
                H = rnd.choice((rnd.randint(1, 64), rnd.randint(1, 4000), rnd.randint(100, 9000)))
                W = rnd.choice((rnd.randint(1, 64), rnd.randint(1, 4000), rnd.randint(100, 9000)))
                items.append((14 * m, t, H, W))
            if rule == "simple":
                f0 = items[0][0]
                items = [(f0, t, H, W) for (_, t, H, W) in items]
                out = py_resize_simple([(H, W) for (_, _, H, W) in items], [t for (_, t, _, _) in items], f0)
            elif rule == "mixed":
                out = py_resize_mixed([(H, W) for (_, _, H, W) in items], [t for (_, t, _, _) in items],
                                      [fa for (fa, _, _, _) in items])
            else:
                out = [py_smart_resize(H, W, fa, 3136, 3211264 // t) for (fa, t, H, W) in items]
            f.write("%s %d %s -> %s\n" % (rule, n, " ".join("%d %d %d %d" % it for it in items),
                                          " ".join("%d %d" % o for o in out)))


def normalize(u8, native=False):
    if native:
        # transformers' fast processors fold the rescale into the normalisation: float32 mean and
        # std times 1/rescale_factor, then (u - mean) / std in float32
        mean = np.array([0.5, 0.5, 0.5], dtype=np.float32) * np.float32(1 / (1 / 255))
        std = np.array([0.5, 0.5, 0.5], dtype=np.float32) * np.float32(1 / (1 / 255))
        return (u8.astype(np.float32) - mean) / std
    x = (u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    std = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    return (x - mean) / std  # H, W, C float32


def patchify(frames_f32, m):
    a = np.stack([f.transpose(2, 0, 1) for f in frames_f32])  # t, C, H, W
    t, c, H, W = a.shape
    gh, gw = H // PATCH, W // PATCH
    a = a.reshape(t, c, gh // m, m, PATCH, gw // m, m, PATCH)
    a = a.transpose(0, 2, 5, 3, 6, 1, 4, 7)
    return a.reshape(t * gh * gw, c * PATCH * PATCH), (t, gh, gw)


def run_case(outdir, idx, items):
    """items: list of dicts {files: [...], is_video, merge}."""
    rgbs, sizes, frames, factors = [], [], [], []
    for it in items:
        fr = [Image.open(os.path.join(outdir, f)).convert("RGB") for f in it["files"]]
        rgbs.append(fr)
        w, h = fr[0].size  # PIL gives (width, height)
        sizes.append((h, w))
        frames.append(len(fr))
        factors.append(PATCH * it["merge"])
    if all(f == factors[0] for f in factors):
        targets = py_resize_simple(sizes, frames, factors[0])
    else:
        targets = py_resize_mixed(sizes, frames, factors)
    pv, meta_items = [], []
    with open(os.path.join(outdir, "case%d.rgb" % idx), "wb") as fo:
        for it, fr, (th, tw) in zip(items, rgbs, targets):
            normed = []
            for im in fr:
                fo.write(np.asarray(im, dtype=np.uint8).tobytes())
                r = im.resize((tw, th), resample=Image.BICUBIC)
                normed.append(normalize(np.asarray(r, dtype=np.uint8)))
            p, grid = patchify(normed, it["merge"])
            pv.append(p)
            meta_items.append({"w": fr[0].size[0], "h": fr[0].size[1], "frames": len(fr),
                               "is_video": it["is_video"], "merge": it["merge"],
                               "files": it["files"], "grid": list(grid),
                               "resized": [th, tw]})
    np.concatenate(pv).astype("<f4").tofile(os.path.join(outdir, "case%d.pv" % idx))
    with open(os.path.join(outdir, "case%d.json" % idx), "w") as f:
        json.dump({"items": meta_items}, f)


def main():
    if sys.argv[1] == "pv":  # pil_ref.py pv IMAGE OUT [native]: one image's pixel_values (merge 1)
        native = len(sys.argv) > 4 and sys.argv[4] == "native"
        im = Image.open(sys.argv[2]).convert("RGB")
        w, h = im.size
        if native:
            th, tw = py_smart_resize(h, w, PATCH, 3136, 3211264)
        else:
            (th, tw), = py_resize_simple([(h, w)], [1], PATCH)
        r = np.asarray(im.resize((tw, th), resample=Image.BICUBIC), dtype=np.uint8)
        pv, _ = patchify([normalize(r, native)], 1)
        pv.astype("<f4").tofile(sys.argv[3])
        return
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    if len(sys.argv) > 2 and sys.argv[2] == "rules":
        write_rules(os.path.join(outdir, "rules.txt"))
        return

    def save(im, name, **kw):
        im.save(os.path.join(outdir, name), **kw)
        return name

    files = {}
    files["big"] = save(smooth_noise(1920, 1080, 1), "big.png")
    files["small"] = save(smooth_noise(50, 30, 2), "small.png")
    files["pal"] = save(smooth_noise(300, 200, 3).quantize(colors=37), "pal.png")
    rgba = smooth_noise(333, 517, 4).convert("RGBA")
    alpha = np.asarray(smooth_noise(333, 517, 5))[:, :, 0]
    rgba.putalpha(Image.fromarray(alpha, "L"))
    files["rgba"] = save(rgba, "rgba.png")
    files["grey"] = save(smooth_noise(640, 10, 6).convert("L"), "grey.png")
    files["thin"] = save(smooth_noise(5, 2000, 7), "thin.png")
    la = smooth_noise(97, 61, 8).convert("LA")
    files["la"] = save(la, "la.png")
    files["bw"] = save(smooth_noise(120, 90, 9).convert("1"), "bw.png")
    files["webp"] = save(smooth_noise(400, 300, 10), "lossless.webp", lossless=True)
    files["webpq"] = save(smooth_noise(400, 300, 11), "lossy.webp", quality=80)
    files["jpg"] = save(smooth_noise(257, 199, 12, noise=2), "photo.jpg", quality=90)
    files["jpg444"] = save(smooth_noise(161, 97, 18), "photo444.jpg", quality=95, subsampling=0)
    only_images = len(sys.argv) > 2 and sys.argv[2] == "images"
    if not only_images:  # large downscales: preprocessing only (PNG encoding them is slow)
        files["huge"] = save(smooth_noise(2400, 1600, 13), "huge.png")
        files["huge2"] = save(smooth_noise(1500, 2500, 14), "huge2.png")
    vid = []
    base = np.asarray(smooth_noise(160, 120, 15)).copy()
    for k in range(4):
        fr = base.copy()
        if k >= 2:  # frames 2,3 differ only in one region: DiffFP keeps few tokens
            fr[10:40, 30:60] = 255 - fr[10:40, 30:60]
        if k == 3:
            fr[80:100, 100:150] = (fr[80:100, 100:150] // 2)
        vid.append(save(Image.fromarray(fr, "RGB"), "vid_%d.png" % k))

    if only_images:
        g16 = (np.asarray(smooth_noise(64, 48, 16))[:, :, 0].astype(np.uint16) * 3)
        files["palt"] = save(smooth_noise(90, 70, 17).quantize(colors=16), "palt.png",
                             transparency=3)
        files["g16"] = save(Image.fromarray(g16.astype(np.int32), "I"), "grey16.png")
        with open(os.path.join(outdir, "images.txt"), "w") as f:
            for key, name in sorted(files.items()):
                im = Image.open(os.path.join(outdir, name)).convert("RGB")
                np.asarray(im, dtype=np.uint8).tofile(os.path.join(outdir, name + ".rgb"))
                f.write("%s %d %d\n" % (name, im.size[0], im.size[1]))
        return

    img = lambda key: {"files": [files[key]], "is_video": 0, "merge": 1}
    cases = [
        [img("big")], [img("small")], [img("pal")], [img("rgba")], [img("grey")], [img("thin")],
        [img("la")], [img("bw")], [img("webp")], [img("webpq")], [img("jpg")],
        [img("huge")],
        [img("huge"), img("huge2")],                       # N = 2: shared budget
        [{"files": vid, "is_video": 1, "merge": 2}],        # video, merge 2
        [{"files": vid, "is_video": 1, "merge": 2}, img("small")],  # mixed merge sizes
    ]
    for i, c in enumerate(cases):
        run_case(outdir, i, c)
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("%d\n" % len(cases))


if __name__ == "__main__":
    main()
