#!/usr/bin/python3
"""filter_unicode14.py IN OUT: keep the corpus cases whose every code point is assigned in the
Unicode database of this Python (unicodedata.unidata_version, 14.0 on Debian 12), and drop the
"'" + U+017F (long s) contraction, where Oniguruma (HF, case-folding) and the JS port (ASCII
folding) disagree. The engine's utf8proc is Unicode 15.0 and Node's ICU is newer: code points
assigned after 14.0 could be classified differently by the three, so they stay out of the
conformance corpus."""
import json
import sys
import unicodedata

kept = dropped = 0
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as out:
    for line in f:
        text = json.loads(line)["text"]
        if any(unicodedata.category(c) == "Cn" for c in text) or "'\u017f" in text:
            dropped += 1
            continue
        out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        kept += 1
print(f"unicode {unicodedata.unidata_version}: kept {kept}, dropped {dropped}", file=sys.stderr)
