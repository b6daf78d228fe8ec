"""tools/oracle/gen_tokenizer.py: the tokenizer conformance reference from Hugging Face's Rust
`tokenizers` (PyPI), replacing the JS port's output (tools/tokenizer-ref/gen_ref.mjs).

Usage (inside tools/oracle/.venv-native, run by `tools/oracle/gen`):
  gen_tokenizer.py QWEN_DIR CORPUS.jsonl OUT.jsonl [STALE.txt]
QWEN_DIR holds the real Qwen2.5 tokenizer files (vocab.json, merges.txt, tokenizer_config.json;
no tokenizer.json): transformers' AutoTokenizer builds the Rust tokenizer from them (its
`backend_tokenizer`), and the three tokens VideoLLaMA3 adds are added as special tokens
(<image> 151665, <|stream_start|> 151666, <|stream_end|> 151667; spec §1.5), as the checkpoints'
tokenizer.json has them. Line i of OUT: {"ids": [...], "skip": decode(ids, skip special),
"keep": decode(ids)} for line i of CORPUS, encoded without added special tokens and decoded
without clean-up, the format tests/engine/test_tokenizer.c reads. STALE.txt gets the code points
whose NFC in tokenizers differs from Unicode's (stale_nfc), which the test exempts.
"""
import json
import sys

import tokenizers
import transformers
from tokenizers import AddedToken
from transformers import AutoTokenizer, Qwen2Tokenizer

VL3_TOKENS = [(151665, "<image>"), (151666, "<|stream_start|>"), (151667, "<|stream_end|>")]


def load(qdir):
    try:
        t = AutoTokenizer.from_pretrained(qdir)
    except ValueError:  # no tokenizer_class (the tiny subset): the Qwen2 class directly
        t = Qwen2Tokenizer.from_pretrained(qdir)
    rust = t.backend_tokenizer
    vocab = rust.get_vocab(with_added_tokens=True)
    for tid, content in VL3_TOKENS:
        if content in vocab:  # a tokenizer that has them already (the tiny subset: own ids)
            continue
        rust.add_special_tokens([AddedToken(content, special=True, normalized=False)])
        got = rust.token_to_id(content)
        assert got == tid, f"{content} got id {got}, expected {tid}"
    return rust


def stale_nfc(tok):
    """Assigned code points (Python's unicodedata, Unicode 14 on 3.11) for which the Rust
    normalizer's NFC differs from unicodedata's on short probes (alone, after a base letter,
    before/after marks of class 230 and 10, after a Hangul lead): its tables predate the
    combining classes of newer marks (U+09FE, U+1AC1, ...)."""
    import unicodedata
    nz = tok.normalizer
    out = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000 or unicodedata.category(chr(cp)) == "Cn":
            continue
        c = chr(cp)
        for s in (c, "a" + c, "a" + c + "\u0301", "a\u0301" + c, "a" + c + "\u05b0",
                  "a\u05b0" + c, "\u1100" + c, c + "\u0301"):
            if nz.normalize_str(s) != unicodedata.normalize("NFC", s):
                out.append(cp)
                break
    return out


def main():
    qdir, corpus, out = sys.argv[1:4]
    tok = load(qdir)
    if len(sys.argv) > 4:
        stale = stale_nfc(tok)
        with open(sys.argv[4], "w") as f:
            f.write("".join(f"{cp:04X}\n" for cp in stale))
        print(f"{len(stale)} code points with a stale NFC in tokenizers", file=sys.stderr)
    n = ntok = 0
    with open(corpus, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as o:
        for line in f:
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            ids = tok.encode(text, add_special_tokens=False).ids
            rec = {"ids": ids, "skip": tok.decode(ids, skip_special_tokens=True),
                   "keep": tok.decode(ids, skip_special_tokens=False)}
            o.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
            ntok += len(ids)
    print(f"{n} cases, {ntok} tokens (tokenizers {tokenizers.__version__}, transformers "
          f"{transformers.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
