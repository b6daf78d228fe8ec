// gen_ref.mjs DIR CORPUS.jsonl OUT.jsonl: reference ids of every corpus case from the
// @huggingface/tokenizers JS port, with the decoded text (special tokens skipped and kept).
// Output line i: {"ids": [...], "skip": "...", "keep": "..."}.
import fs from "node:fs";
import { loadReference, encode, decode } from "./lib.mjs";

const [dir, corpus, outPath] = process.argv.slice(2);
const tok = loadReference(dir);
const lines = fs.readFileSync(corpus, "utf8").split("\n").filter((l) => l.length);
const out = [];
let ntok = 0;
for (const line of lines) {
  const { text } = JSON.parse(line);
  const ids = encode(tok, text);
  ntok += ids.length;
  out.push(JSON.stringify({ ids, skip: decode(tok, ids, true), keep: decode(tok, ids, false) }));
}
fs.writeFileSync(outPath, out.join("\n") + "\n");
console.error(`${lines.length} cases, ${ntok} tokens`);
