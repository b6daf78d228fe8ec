# libFuzzer target for the tokenizer (VL3_FUZZ=ON with clang). The tokenizer sources are compiled
# into the fuzzer itself with -fsanitize=fuzzer so that libFuzzer sees their coverage.
# Run: build/bin/fuzz-tokenizer -max_total_time=60 tests/fuzz/tokenizer/
if(VL3_FUZZ)
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    file(GLOB VL3_FUZZ_TOKENIZER_SRC ${CMAKE_SOURCE_DIR}/engine/src/tokenizer*.c)
    add_executable(fuzz-tokenizer fuzz/fuzz_tokenizer.c ${VL3_FUZZ_TOKENIZER_SRC})
    target_include_directories(fuzz-tokenizer PRIVATE ${CMAKE_SOURCE_DIR}/engine/include
      ${CMAKE_SOURCE_DIR}/engine/src)
    target_compile_definitions(fuzz-tokenizer PRIVATE
      VL3_FUZZ_DEFAULT_DIR="${CMAKE_SOURCE_DIR}/tests/fixtures/tokenizer/tiny")
    target_compile_options(fuzz-tokenizer PRIVATE -fsanitize=fuzzer,address,undefined
      -fno-sanitize-recover=undefined)
    target_link_options(fuzz-tokenizer PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz-tokenizer PRIVATE vl3common PkgConfig::UTF8PROC PkgConfig::JANSSON
      Threads::Threads)
  else()
    message(WARNING "VL3_FUZZ needs clang; fuzz-tokenizer not built")
  endif()
endif()
