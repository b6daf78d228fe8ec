#!/usr/bin/python3
"""difffp_ref.py: numpy reference of DiffFP (spec §5.5), written from the transformers-native
_get_compression_mask: view a video's pixel_values as [t, tokens, m*m*588], |diff| with the
previous frame, mean over the last axis, times 255, > threshold; frame 0 kept; frames keeping
fewer than min_tokens get their first tokens forced on.

Usage: difffp_ref.py PV_FILE T GH GW M THRESHOLD f32|bf16 OUT_MASK
PV_FILE holds float32 pixel_values of ONE video; OUT_MASK gets one byte (0/1) per merged token.
bf16 mode rounds inputs, differences, the mean and the product to bfloat16 (round to nearest
even, emulated on the float32 bit pattern) and compares with bf16(threshold).
"""
import sys

import numpy as np


def bf16(x):
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) & np.uint64(0xFFFF0000)
    return u.astype(np.uint32).view(np.float32)


def main():
    path, t, gh, gw, m, thr, mode, out = sys.argv[1:9]
    t, gh, gw, m, thr = int(t), int(gh), int(gw), int(m), float(thr)
    pv = np.fromfile(path, dtype="<f4")
    n_tok = (gh // m) * (gw // m)
    img = pv.reshape(t, n_tok, -1)
    if mode == "bf16":
        img = bf16(img)
        diff = bf16(img[1:] - img[:-1])
        d = bf16(np.abs(diff).astype(np.float64).mean(-1).astype(np.float32))
        d = bf16(d * np.float32(255))
        thr_c = bf16(np.float32(thr))
    else:
        d = np.abs(img[1:] - img[:-1]).mean(-1, dtype=np.float32) * np.float32(255)
        thr_c = np.float32(thr)
    d = np.concatenate([np.full((1, n_tok), thr + 1, dtype=np.float32), d])
    mask = d > thr_c
    for i in range(t):
        if mask[i].sum() < 1:
            mask[i, :1] = True
    mask.astype(np.uint8).tofile(out)


if __name__ == "__main__":
    main()
