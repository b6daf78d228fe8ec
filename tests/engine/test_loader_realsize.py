#!/usr/bin/python3
"""test_loader_realsize.py: write a checkpoint with the real 2B or 7B shapes whose data area is a
hole (sparse file), for test-loader (cases real_2b_shapes, real_7b_shapes_sharded).

The tensor list is built here from the module tree of spec section 2 (independently of the C
tiny writer); config.json carries the values of spec section 1 (remote layout). Only headers are
written; the data is never read by the loader, so nothing but metadata hits the disk.

usage: test_loader_realsize.py DIR 2b|7b
Prints the total parameter count computed here.
"""
import json
import os
import struct
import sys

SIZES = {
    # hidden, intermediate, heads, kv heads, vocab rows, tied, shards
    "2b": (1536, 8960, 12, 2, 151936, True, 1),
    "7b": (3584, 18944, 28, 4, 152064, False, 4),
}


def tensors(D, I, H, KV, V, tied):
    Cv, Iv, Lv, L, P = 1152, 4304, 27, 28, 14
    kvd = KV * (D // H)
    t = [("model.vision_encoder.embeddings.patch_embedding.weight", [Cv, 3, P, P]),
         ("model.vision_encoder.embeddings.patch_embedding.bias", [Cv])]
    for i in range(Lv):
        p = f"model.vision_encoder.encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            t += [(p + n + ".weight", [Cv]), (p + n + ".bias", [Cv])]
        for n in ("q", "k", "v", "out"):
            t += [(p + f"self_attn.{n}_proj.weight", [Cv, Cv]), (p + f"self_attn.{n}_proj.bias", [Cv])]
        t += [(p + "mlp.fc1.weight", [Iv, Cv]), (p + "mlp.fc1.bias", [Iv]),
              (p + "mlp.fc2.weight", [Cv, Iv]), (p + "mlp.fc2.bias", [Cv])]
    t += [("model.vision_encoder.post_layernorm.weight", [Cv]),
          ("model.vision_encoder.post_layernorm.bias", [Cv]),
          ("model.mm_projector.readout.0.weight", [D, Cv]), ("model.mm_projector.readout.0.bias", [D]),
          ("model.mm_projector.readout.2.weight", [D, D]), ("model.mm_projector.readout.2.bias", [D]),
          ("model.embed_tokens.weight", [V, D]), ("model.norm.weight", [D])]
    for j in range(L):
        p = f"model.layers.{j}."
        t += [(p + "input_layernorm.weight", [D]), (p + "post_attention_layernorm.weight", [D]),
              (p + "self_attn.q_proj.weight", [D, D]), (p + "self_attn.q_proj.bias", [D]),
              (p + "self_attn.k_proj.weight", [kvd, D]), (p + "self_attn.k_proj.bias", [kvd]),
              (p + "self_attn.v_proj.weight", [kvd, D]), (p + "self_attn.v_proj.bias", [kvd]),
              (p + "self_attn.o_proj.weight", [D, D]),
              (p + "mlp.gate_proj.weight", [I, D]), (p + "mlp.up_proj.weight", [I, D]),
              (p + "mlp.down_proj.weight", [D, I])]
    if not tied:
        t.append(("lm_head.weight", [V, D]))
    return t


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def write_sparse(path, items):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in items:
        nb = 2 * count(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + off)
    return off


def main():
    d, which = sys.argv[1], sys.argv[2]
    D, I, H, KV, V, tied, shards = SIZES[which]
    os.makedirs(d, exist_ok=True)
    cfg = {
        "architectures": ["Videollama3Qwen2ForCausalLM"], "model_type": "videollama3_qwen2",
        "hidden_size": D, "intermediate_size": I, "num_attention_heads": H, "num_key_value_heads": KV,
        "num_hidden_layers": 28, "vocab_size": V, "tie_word_embeddings": tied, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None, "use_sliding_window": False, "sliding_window": None,
        "max_position_embeddings": 32768, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
        "image_token_index": 151665, "mm_projector_type": "mlp2x_gelu", "use_token_compression": True,
        "vision_encoder": None, "torch_dtype": "bfloat16",
        "vision_encoder_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16,
                                  "num_hidden_layers": 27, "patch_size": 14, "num_channels": 3,
                                  "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
                                  "model_type": "videollama3_vision_encoder"},
    }
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    items = tensors(D, I, H, KV, V, tied)
    if shards == 1:
        write_sparse(os.path.join(d, "model.safetensors"), items)
    else:
        per = (len(items) + shards - 1) // shards
        wm, total = {}, 0
        for k in range(shards):
            name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = items[k * per:(k + 1) * per]
            total += write_sparse(os.path.join(d, name), part)
            wm.update({n: name for n, _ in part})
        json.dump({"metadata": {"total_size": total}, "weight_map": wm},
                  open(os.path.join(d, "model.safetensors.index.json"), "w"))
    print(sum(count(s) for _, s in items))


if __name__ == "__main__":
    main()
