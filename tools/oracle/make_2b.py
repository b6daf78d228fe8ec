"""tools/oracle/make_2b.py OUT: a random-weight native checkpoint with the VideoLLaMA3-2B sizes
(Qwen2.5-1.5B LLM: hidden 1536, 28 layers, 12 heads / 2 kv heads, MLP 8960, vocab 151936 with
the real Qwen2.5 tokenizer; SigLIP-so400m-like vision: hidden 1152, 27 layers, 16 heads, MLP
4304), for timing only (tools/oracle/bench.py --model OUT). The config, tokenizer and processor
files are those of `vl3 model tiny --layout native --tokenizer ...` with the sizes edited (so
that vl3 and transformers read the same files); the weights are transformers' random init
(std 0.02) saved in bf16 by save_pretrained (the same tensor names as vl3's tiny checkpoint).
The lm_head is separate (native tiny layout), ~0.23 B parameters more than the tied 2B.
"""
import json
import os
import shutil
import subprocess
import sys

import torch
from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

TEXT = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
        "num_attention_heads": 12, "num_key_value_heads": 2, "max_window_layers": 28,
        "initializer_range": 0.02}
VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
          "num_attention_heads": 16, "initializer_range": 0.02}


def main():
    out = sys.argv[1]
    vl3 = sys.argv[2] if len(sys.argv) > 2 else "build/bin/vl3"
    qtok = sys.argv[3] if len(sys.argv) > 3 else "../shared/data/qwen2.5-tokenizer"
    subprocess.run([vl3, "model", "tiny", "--out", out, "--layout", "native", "--tokenizer", qtok],
                   check=True, stdout=subprocess.DEVNULL)
    cfg_path = os.path.join(out, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["text_config"].update(TEXT)
    cfg["vision_config"].update(VISION)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = VideoLlama3ForConditionalGeneration(VideoLlama3Config.from_pretrained(out))
    n = sum(p.numel() for p in model.parameters())
    tmp = out + ".weights"
    model.save_pretrained(tmp)
    os.remove(os.path.join(out, "model.safetensors"))
    for fn in os.listdir(tmp):
        if fn.startswith("model") and (fn.endswith(".safetensors") or fn.endswith(".json")):
            shutil.move(os.path.join(tmp, fn), os.path.join(out, fn))
    shutil.rmtree(tmp)
    print(f"{out}: {n / 1e9:.2f} B parameters", file=sys.stderr)


if __name__ == "__main__":
    main()
