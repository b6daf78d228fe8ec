// gen_corpus.mjs OUT.jsonl: writes the tokenizer conformance corpus, one {"text": ...} per line.
// Deterministic (seeded PRNG): hand-written edge cases, multilingual sentences in NFC and NFD,
// code, emoji (ZWJ, skin tones, flags), whitespace/newline runs, digits, contractions, chat
// prompts with special tokens and <image> frames, then random mixtures of all of these and
// random code points from many Unicode blocks (only code points assigned by Unicode 14, so the
// differing Unicode versions of Node, utf8proc and Oniguruma do not matter; see corpus.md).
import fs from "node:fs";

let seed = 0x5eed1234;
function rnd() {
  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rnd() * a.length)];
const irange = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const cases = [];
const add = (s) => cases.push(s);

// --- hand-written edge cases ---------------------------------------------------------------
const edge = [
  "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \n ",
  "  \n  ", "\t\n", "\n\t", "a\n", "a \n", "a  \n b", "a\n\nb", "a\r\nb", "a \r\n b", "x\t\ty",
  "Hello world", " Hello World!", "Hello  world", "Hello   world", "Hello    world   ", "hello\tworld",
  "   leading", "trailing   ", "  both  ", "a b c d e f g", "a  b  c", "word\u00a0word", "word\u3000word",
  "line1\u2028line2", "para\u2029para", "nel\u0085nel", "vt\u000bvt", "ff\u000cff", "zwsp\u200bzwsp",
  "bom\ufeffbom", "mongolian\u180evowel", "narrow\u202fnbsp", "math\u205fspace", "ogham\u1680space",
  "en\u2002em\u2003thin\u2009hair\u200a", "\u00a0\u00a0\u00a0x", "  \u00a0x", "\u3000\u3000漢字",
  "0", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "-42", "+7", "1e10",
  "0x1F", "v1.2.3", "2024-01-15", "12:30:45", "$100", "100%", "½ ⅓ ¼", "²³¹", "Ⅻ ⅻ", "٣٤٥", "१२३",
  "①②③", "𝟙𝟚𝟛", "１２３", "〇一二",
  "don't", "Don't", "DON'T", "it's", "It'S", "IT'S", "we're", "We'RE", "WE'Re", "I've", "I'VE",
  "I'm", "I'M", "you'll", "YOU'LL", "You'Ll", "he'd", "HE'D", "'s", "'S", "'t", "'re", "'ve", "'m",
  "'ll", "'d", "'x", "''s", "'''", "'sup", "'tis", "'ready", "'veal", "'mm", "'llama", "'dd",
  "rock 'n' roll", "students' books", "James's", "o'clock", "l'homme", "’s curly", "it’s",
  "!!!", "???", "...", "?!", "!?!?", "---", "===", "***", "~~~", "@@", "##", "$$", "%%", "^^", "&&",
  "||", "\\\\", "//", "::", ";;", ",,", "..", "<<>>", "{{}}", "[[]]", "(())", "\"\"", "''", "``",
  " !", " !!", "  !", "a!", "a !", "a  !", "!\n", "!\n\n", "! \n", "!\r\n", ".\n\n\n", "?\r\n\r\n",
  "a.b", "a..b", "a. b", "e.g.", "i.e.,", "U.S.A.", "Mr. Smith", "(a)", "[b]", "{c}", "<d>", "«e»",
  "„f“", "—g—", "–h–", "…i…", "¿j?", "¡k!", "§l", "¶m", "†n", "•o", "©p", "®q", "™r", "°s", "±t",
  "µu", "×v", "÷w", "€x", "£y", "¥z", "₹", "₿", "∞", "≠", "≤≥", "∑∏∫", "√2", "π≈3.14", "∀x∃y",
  "→←↑↓", "⇒⇔", "★☆", "♠♣♥♦", "✓✗", "☺☹", "⌘⌥⇧", "␣", "\u0000", "a\u0000b", "\u0001\u0002\u0003",
  "\u007f", "\u001b[31mred\u001b[0m", "tab\there", "\u00ad soft hyphen", "a\u0301", "e\u0301\u0301",
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<|stream_start|>", "<|stream_end|>",
  "<|image_pad|>", "<|video_pad|>", "<|vision_start|><|vision_end|>", "<tool_call>", "</tool_call>",
  "<|fim_prefix|><|fim_suffix|><|fim_middle|>", "<|box_start|>(1,2),(3,4)<|box_end|>",
  "<image><image><image>", "<image>,<image>", "<imag", "<image", "image>", "<<image>>", "<|im_start",
  "im_start|>", "<|im_start|><|im_end|>", "a<|im_end|>b", " <|im_end|> ", "\n<|im_end|>\n",
  "<|IM_START|>", "< image >", "<Image>", "<|endoftext|><|endoftext|>", "x<|stream_start|>y<|stream_end|>z",
  "Time 1.0s:<image>", "Time 0.0s:<image>,<image>\n", "Time 12.5s:", "Time 1.0s: <image>",
  // added tokens are split out before NFC: '>' + U+0338 must not compose into U+226F after them
  "<|stream_end|>\u0338\u031d", "a>\u0338", "<image>\u0338", "\u003c\u0338image>", "<|im_end|>\u0301x",
];
edge.forEach(add);

// --- contractions in every case -------------------------------------------------------------
for (const c of ["s", "t", "re", "ve", "m", "ll", "d"]) {
  const variants = new Set();
  for (let mask = 0; mask < 1 << c.length; mask++)
    variants.add([...c].map((ch, i) => ((mask >> i) & 1 ? ch.toUpperCase() : ch)).join(""));
  for (const v of variants) {
    add(`'${v}`);
    add(`x'${v}`);
    add(`X'${v} y`);
    add(`'${v}abc`);
    add(` '${v}`);
    add(`1'${v}`);
    add(`'${v}'${v}`);
    add(`word'${v}\n`);
  }
}

// --- multilingual sentences, NFC and NFD --------------------------------------------------
const sentences = [
  "The quick brown fox jumps over the lazy dog.",
  "Pack my box with five dozen liquor jugs!",
  "Ça va? Très bien, merci. L'été à Paris.",
  "Düsseldorf, Köln, München und Straße — Grüße!",
  "¿Dónde está la biblioteca? Mañana, señor.",
  "São Paulo é a maior cidade do Brasil; ação, coração.",
  "Zażółć gęślą jaźń. Łódź i Kraków.",
  "Příliš žluťoučký kůň úpěl ďábelské ódy.",
  "Árvíztűrő tükörfúrógép.",
  "Ελληνικά: Γειά σου Κόσμε! Ὁ λόγος.",
  "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Українська мова: Ґанок, їжак, є.",
  "Бързата кафява лисица.",
  "עברית: שלום עולם! מה שלומך?",
  "العربية: مرحبا بالعالم! كيف حالك؟ ١٢٣",
  "فارسی: سلام دنیا، حال شما چطور است؟",
  "हिन्दी: नमस्ते दुनिया! आप कैसे हैं? क्षत्रिय",
  "বাংলা: হ্যালো বিশ্ব!",
  "தமிழ்: வணக்கம் உலகம்",
  "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง",
  "ລາວ: ສະບາຍດີ",
  "ქართული: გამარჯობა მსოფლიო",
  "Հայերեն: Բարեւ աշխարհ",
  "አማርኛ: ሰላም ልዑል",
  "中文：你好，世界！今天天气很好。",
  "繁體中文：臺灣的資訊科技產業。",
  "日本語：こんにちは世界！カタカナとひらがな、漢字。",
  "ｶﾀｶﾅ半角とＦｕｌｌｗｉｄｔｈ",
  "한국어: 안녕하세요, 세계! 한글 자모 ᄀᄁᄂ",
  "Tiếng Việt: Xin chào thế giới! Ngữ pháp tiếng Việt.",
  "Türkçe: İstanbul'da ıslak ığdır.",
  "Íslenska: Þórður og Ægir.",
  "Dansk/Norsk: Ærø, Øresund, Århus.",
  "Lietuvių: Ačiū, ėėė, ųųų.",
  "Монгол: Сайн байна уу",
  "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
  "ꦗꦮ ꦲꦏ꧀ꦱꦫ",
  "Ingles con acentos combinados: café naïve résumé coöperate",
  "Math: 𝑥² + 𝑦² = 𝑧², ∫₀^∞ e^{-x} dx = 1",
  "Emoji: 😀😃😄 👍🏽👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇸🇯🇵 ❤️ ✋🏻 🧑🏾‍💻 👩‍❤️‍💋‍👨",
];
for (const s of sentences) {
  add(s);
  const nfd = s.normalize("NFD");
  if (nfd !== s) add(nfd);
  const nfkd = s.normalize("NFKD");
  if (nfkd !== s && nfkd !== nfd) add(nfkd);
  add(" " + s);
  add(s + "\n");
  add(s.toUpperCase());
  add(s.split(" ").join("  "));
  add(s.split(" ").join("\n"));
}

// --- code -----------------------------------------------------------------------------------
const code = [
  "int main(int argc, char **argv)\n{\n    return 0;\n}\n",
  "def f(x):\n    if x > 0:\n        return x ** 2\n    return -x\n",
  "for (size_t i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}",
  "const x = {a: 1, 'b': [2, 3], \"c\": null};\n",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
  "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
  "    \n    \n\n        indented\n",
  "if __name__ == \"__main__\":\n    main()\n",
  "x=1;y=2;z=x+y//3%4**5\n",
  "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
  "{\"key\": \"value\", \"list\": [1, 2.5, true, false, null], \"nested\": {\"a\": {}}}",
  "$ ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1",
  "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
  "a_b_c snake_case CamelCase camelCase SCREAMING_CASE kebab-case",
  "https://example.com/path?query=1&b=two#frag",
  "user@example.com, +1 (555) 123-4567",
  "C:\\Program Files\\App\\bin\\app.exe",
  "// comment\n/* block\n   comment */\n",
  "\t\t\tdeep\ttabs\t\t\n",
  "matrix = [[1, 2, 3],\n          [4, 5, 6]]\n",
];
for (const s of code) {
  add(s);
  add(s.replace(/\n/g, "\r\n"));
}

// --- chat prompts (spec §7) -----------------------------------------------------------------
function framePrompt(nframes, perFrame, question, system) {
  let s = "";
  if (system) s += "<|im_start|>system\n" + system + "<|im_end|>\n";
  s += "<|im_start|>user\n";
  for (let f = 0; f < nframes; f++) {
    s += `Time ${(f * 0.5).toFixed(1)}s:` + Array(perFrame).fill("<image>").join(",");
    s += f === nframes - 1 ? "\n" : ",";
  }
  s += question + "<|im_end|>\n<|im_start|>assistant\n";
  return s;
}
const questions = [
  "What is in the video?", "Describe this video in detail.", "Who is the main character?",
  "What happens after the rabbit wakes up?", "Count the objects.", "请描述这个视频。",
  "Was passiert in diesem Video?", "この動画について説明してください。",
];
const sys =
  "You are a helpful assistant developed by DAMO Academy. You are capable of understanding images and videos.";
for (let i = 0; i < 60; i++)
  add(framePrompt(irange(1, 6), irange(1, 4), pick(questions), rnd() < 0.5 ? sys : null));
add("<|im_start|>user\n<image>\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n");
add("<|im_start|>assistant\nThe video shows a rabbit.<|im_end|><|endoftext|>");

// --- atoms for random mixtures --------------------------------------------------------------
const ws = [" ", " ", " ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\u00a0",
  "\u3000", "\u2028", "\u2009", "\u0085", "\r", "\t\t", "        ", "\n\n\n", " \t "];
const words = [
  "the", "The", "THE", "hello", "world", "video", "frame", "rabbit", "tokenizer", "unbelievable",
  "antidisestablishmentarianism", "a", "I", "x", "naïve", "café", "straße", "Köln", "façade",
  "привет", "мир", "Москва", "γεια", "Ωmega", "שלום", "مرحبا", "नमस्ते", "สวัสดี", "你好", "世界",
  "東京", "こんにちは", "カタカナ", "안녕", "한국어", "ภาษา", "ĳssel", "ǅemal", "ᾳ", "ﬁne", "ﬀ",
  "İzmir", "ıi", "ß", "ẞ", "Ǆ", "ǈ", "ǋ", "ǲ",
];
const puncts = [".", ",", "!", "?", ";", ":", "-", "--", "...", "'", "\"", "(", ")", "[", "]", "{",
  "}", "<", ">", "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+", "=", "~", "`", "_", "。",
  "，", "！", "？", "、", "「", "」", "«", "»", "“", "”", "‘", "’", "…", "—", "·", "•", "¡", "¿",
  "٪", "؟", "،", "।", "॥"];
const numbers = ["0", "1", "7", "42", "100", "2024", "3.14", "1,000", "10^6", "٣", "७", "๓", "²",
  "½", "Ⅳ", "一", "十", "１", "99999999"];
const emoji = ["😀", "😂", "🤖", "🎬", "📹", "👍", "👍🏻", "👍🏼", "👍🏽", "👍🏾", "👍🏿", "👨‍👩‍👧", "👩‍💻",
  "🧑🏽‍🚀", "🏳️‍🌈", "🏴‍☠️", "🇫🇷", "🇩🇪", "🇨🇳", "❤️", "☀️", "⭐", "🔥", "💯", "🙏🏾", "👁️‍🗨️", "🫠", "🥲",
  "#️⃣", "1️⃣", "©️", "🧔‍♀️", "🤝🏼", "👩🏻‍❤️‍👨🏿"];
const specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<|stream_start|>",
  "<|stream_end|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "<|fim_pad|>"];
const contr = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL",
  "'D", "n't", "'"];
const marks = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u0327", "\u0323", "\u20d7",
  "\u0945", "\u093c", "\u0e31", "\u0e48", "\u05b7", "\u064e", "\u3099", "\u309a", "\u200d", "\ufe0f"];
const kinds = [
  [ws, 5], [words, 8], [puncts, 4], [numbers, 3], [emoji, 2], [specials, 1], [contr, 2], [marks, 1],
];
const bag = kinds.flatMap(([list, w]) => Array(w).fill(list));
function mixture(maxAtoms) {
  let s = "";
  const n = irange(1, maxAtoms);
  for (let i = 0; i < n; i++) {
    let atom = pick(pick(bag));
    if (rnd() < 0.1) atom = atom.normalize("NFD");
    s += atom;
  }
  return s;
}
for (let i = 0; i < 3000; i++) add(mixture(i < 1500 ? 8 : 40));

// --- random code points from many blocks --------------------------------------------------
const blocks = [
  [0x20, 0x7e], [0xa0, 0xff], [0x100, 0x24f], [0x250, 0x2ff], [0x300, 0x36f], [0x370, 0x3ff],
  [0x400, 0x4ff], [0x530, 0x58f], [0x590, 0x5ff], [0x600, 0x6ff], [0x900, 0x97f], [0x980, 0x9ff],
  [0xe00, 0xe7f], [0x10a0, 0x10ff], [0x1100, 0x11ff], [0x1e00, 0x1eff], [0x1f00, 0x1fff],
  [0x2000, 0x206f], [0x2070, 0x209f], [0x20a0, 0x20cf], [0x2100, 0x214f], [0x2150, 0x218f],
  [0x2190, 0x21ff], [0x2200, 0x22ff], [0x2460, 0x24ff], [0x2500, 0x257f], [0x2600, 0x26ff],
  [0x3000, 0x303f], [0x3040, 0x309f], [0x30a0, 0x30ff], [0x3130, 0x318f], [0x4e00, 0x9fff],
  [0xac00, 0xd7a3], [0xf900, 0xfaff], [0xfb00, 0xfb4f], [0xfe30, 0xfe4f], [0xff00, 0xffef],
  [0x1d400, 0x1d7ff], [0x1f300, 0x1f5ff], [0x1f600, 0x1f64f], [0x1f900, 0x1f9ff], [0x20000, 0x2a6df],
  [0x0, 0x1f], [0x80, 0x9f],
];
for (let i = 0; i < 1200; i++) {
  let s = "";
  const n = irange(1, 24);
  const [lo, hi] = pick(blocks);
  for (let j = 0; j < n; j++) {
    const [a, b] = rnd() < 0.7 ? [lo, hi] : pick(blocks);
    s += String.fromCodePoint(irange(a, b));
    if (rnd() < 0.15) s += pick(ws);
  }
  add(s);
}

// --- long inputs ---------------------------------------------------------------------------
add("a".repeat(5000));
add("ab".repeat(2000));
add(" ".repeat(1000) + "x");
add("\n".repeat(500));
add("9".repeat(300));
add("!".repeat(700));
add("漢".repeat(500));
add("😀".repeat(300));
add(sentences.join(" "));
add(Array.from({ length: 200 }, () => mixture(10)).join(""));

fs.writeFileSync(process.argv[2], cases.map((text) => JSON.stringify({ text })).join("\n") + "\n");
console.error(`wrote ${cases.length} cases`);
