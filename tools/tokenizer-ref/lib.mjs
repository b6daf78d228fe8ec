// lib.mjs: build a Hugging Face tokenizer.json object for the Qwen2 tokenizer from the files the
// VideoLLaMA3 checkpoints ship (vocab.json + merges.txt + tokenizer_config.json), adding the three
// VideoLLaMA3 tokens, and load it into the @huggingface/tokenizers JS port (the reference).
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

export const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The tokens VideoLLaMA3 adds on top of Qwen2.5 (spec §1.5), special: true.
export const VL3_ADDED = [
  [151665, "<image>"],
  [151666, "<|stream_start|>"],
  [151667, "<|stream_end|>"],
];

export function buildTokenizerJson(dir) {
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, "vocab.json"), "utf8"));
  const merges = fs
    .readFileSync(path.join(dir, "merges.txt"), "utf8")
    .split("\n")
    .map((l) => l.replace(/\r$/, ""))
    .filter((l) => l.length > 0 && !l.startsWith("#version"));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const added = new Map();
  for (const [id, t] of Object.entries(cfg.added_tokens_decoder ?? {})) {
    added.set(Number(id), { content: t.content, special: !!t.special });
  }
  const contents = new Set([...added.values()].map((t) => t.content));
  for (const [id, content] of VL3_ADDED)
    if (!added.has(id) && !contents.has(content)) added.set(id, { content, special: true });
  const added_tokens = [...added.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([id, t]) => ({
      id,
      content: t.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: t.special,
    }));
  const bl = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizer_json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens,
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: QWEN2_PATTERN }, behavior: "Isolated", invert: false },
        bl,
      ],
    },
    post_processor: bl,
    decoder: bl,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const tokenizer_config = {
    add_bos_token: false,
    add_prefix_space: false,
    bos_token: null,
    eos_token: cfg.eos_token ?? "<|im_end|>",
    pad_token: cfg.pad_token ?? "<|im_end|>",
    unk_token: null,
    clean_up_tokenization_spaces: false,
    split_special_tokens: false,
    additional_special_tokens: cfg.additional_special_tokens ?? [],
  };
  return { tokenizer_json, tokenizer_config };
}

export function loadReference(dir) {
  const { tokenizer_json, tokenizer_config } = buildTokenizerJson(dir);
  return new Tokenizer(tokenizer_json, tokenizer_config);
}

export function encode(tok, text) {
  return tok.encode(text, { add_special_tokens: false }).ids;
}

export function decode(tok, ids, skipSpecial) {
  if (ids.length === 0) return "";
  return tok.decode(ids, { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: false });
}
