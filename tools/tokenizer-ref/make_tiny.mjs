// make_tiny.mjs QWEN_DIR OUT_DIR [NMERGES]: a small real-subset tokenizer for tests that must run
// without ../shared: the 256 byte tokens plus the first NMERGES (default 400) Qwen2 merges,
// renumbered densely, with a few added tokens (special and not) in tokenizer_config.json.
import fs from "node:fs";
import path from "node:path";

const [src, out, nArg] = process.argv.slice(2);
const nmerges = Number(nArg ?? 400);
const vocab = JSON.parse(fs.readFileSync(path.join(src, "vocab.json"), "utf8"));
const merges = fs
  .readFileSync(path.join(src, "merges.txt"), "utf8")
  .split("\n")
  .filter((l) => l.length && !l.startsWith("#version"))
  .slice(0, nmerges);
const byId = Object.entries(vocab).sort((a, b) => a[1] - b[1]);
const tiny = {};
let next = 0;
for (const [t] of byId.slice(0, 256)) tiny[t] = next++; // Qwen2 ids 0..255 are the byte tokens
for (const m of merges) {
  const t = m.split(" ").join("");
  if (!(t in tiny)) tiny[t] = next++;
}
const added = [
  ["<|endoftext|>", true], ["<|im_start|>", true], ["<|im_end|>", true], ["<tool_call>", false],
  ["<image>", true], ["<|stream_start|>", true], ["<|stream_end|>", true],
];
const decoder = {};
for (const [content, special] of added)
  decoder[String(next++)] = { content, lstrip: false, normalized: false, rstrip: false,
    single_word: false, special };
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "vocab.json"), JSON.stringify(tiny));
fs.writeFileSync(path.join(out, "merges.txt"), "#version: 0.2\n" + merges.join("\n") + "\n");
fs.writeFileSync(path.join(out, "tokenizer_config.json"), JSON.stringify({
  add_bos_token: false, add_prefix_space: false, bos_token: null, eos_token: "<|im_end|>",
  clean_up_tokenization_spaces: false, added_tokens_decoder: decoder,
}, null, 2) + "\n");
console.error(`tiny tokenizer: ${next} ids, ${merges.length} merges`);
