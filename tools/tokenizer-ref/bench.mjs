// bench.mjs DIR FILE [REPEATS]: encode speed of the JS reference on FILE's text (whole file in
// one call, first (cold) run, then best of REPEATS warm runs).
// Prints one JSON line: tokens, cold_seconds, seconds (best warm), load_seconds, and
// a hash of the ids (FNV-1a over the 32-bit ids, as `vl3 bench tokenize` computes it).
import fs from "node:fs";
import { loadReference, encode } from "./lib.mjs";

const [dir, file, rep] = process.argv.slice(2);
const repeats = Number(rep ?? 3);
const t0 = performance.now();
const tok = loadReference(dir);
const loadS = (performance.now() - t0) / 1000;
const text = fs.readFileSync(file, "utf8");
let t1 = performance.now();
let ids = encode(tok, text); // cold: empty word cache, JIT warming up
const cold = (performance.now() - t1) / 1000;
let best = Infinity;
for (let r = 0; r < repeats; r++) {
  const t = performance.now();
  ids = encode(tok, text);
  best = Math.min(best, (performance.now() - t) / 1000);
}
let h = 0x811c9dc5;
for (const id of ids) {
  for (let k = 0; k < 4; k++) {
    h ^= (id >>> (8 * k)) & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
}
console.log(JSON.stringify({ tokens: ids.length, cold_seconds: cold, seconds: best, load_seconds: loadS, hash: h >>> 0 }));
