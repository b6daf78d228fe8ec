# Tokenizer tests: conformance with the HF reference (tests/fixtures/tokenizer), round trips,
# errors, streaming decode. Cases needing ../shared/data skip (77) when it is absent.
vl3_test(NAME test-tokenizer SOURCES engine/test_tokenizer.c LIBS vl3engine PkgConfig::UTF8PROC
  PkgConfig::JANSSON Threads::Threads LABELS unit TIMEOUT 120)

# The direct vocab.json reader against jansson (white-box).
vl3_test(NAME test-tokenizer-vocab SOURCES engine/test_tokenizer_vocab.c LIBS vl3engine
  PkgConfig::JANSSON LABELS unit TIMEOUT 120)
target_include_directories(test-tokenizer-vocab PRIVATE ${CMAKE_SOURCE_DIR}/engine/src)

# The pre-tokenizer against Oniguruma, the regex engine HF tokenizers uses (white-box; only when
# libonig-dev is installed: it is a test oracle, not a dependency of the engine).
pkg_check_modules(ONIG QUIET IMPORTED_TARGET oniguruma)
if(ONIG_FOUND)
  vl3_test(NAME test-tokenizer-onig SOURCES engine/test_tokenizer_onig.c LIBS vl3engine
    PkgConfig::ONIG PkgConfig::UTF8PROC PkgConfig::JANSSON LABELS unit TIMEOUT 120)
  target_include_directories(test-tokenizer-onig PRIVATE ${CMAKE_SOURCE_DIR}/engine/src)
else()
  message(STATUS "oniguruma not found: test-tokenizer-onig not built (apt-get install libonig-dev)")
endif()
