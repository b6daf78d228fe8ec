# Tokenizer tests: conformance with the HF reference (tests/fixtures/tokenizer), round trips,
# errors, streaming decode. Cases needing ../shared/data skip (77) when it is absent.
vl3_test(NAME test-tokenizer SOURCES engine/test_tokenizer.c LIBS vl3engine PkgConfig::UTF8PROC
  PkgConfig::JANSSON Threads::Threads LABELS unit TIMEOUT 120)
