// check_known.mjs DIR: the JS reference must reproduce the known pairs of shared/data/README.md.
import { loadReference, encode } from "./lib.mjs";
const tok = loadReference(process.argv[2]);
const known = [
  ["Hello world", [9707, 1879]],
  [" Hello World!", [21927, 4337, 0]],
  ["\n\n", [271]],
  [
    "<|im_start|>user\n<image>\nWhat is in the video?<|im_end|>\n<|im_start|>assistant\n",
    [151644, 872, 198, 151665, 198, 3838, 374, 304, 279, 2766, 30, 151645, 198, 151644, 77091, 198],
  ],
];
let bad = 0;
for (const [text, want] of known) {
  const got = encode(tok, text);
  const ok = JSON.stringify(got) === JSON.stringify(want);
  if (!ok) bad++;
  console.log(`${ok ? "ok  " : "FAIL"} ${JSON.stringify(text)} -> ${got.join(" ")}`);
}
process.exit(bad ? 1 : 0);
