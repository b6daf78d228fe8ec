# libFuzzer target for the token cache's entry parser (engine/src/visual_tokens.c): cache entries
# come back from a database and are untrusted bytes. Only with -DVL3_FUZZ=ON and clang:
#   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DVL3_FUZZ=ON -DVL3_CUDA=OFF
#   build-fuzz/bin/fuzz-visual-tokens -max_total_time=60 tests/fuzz/visual_tokens
# The parser's source is compiled into the fuzzer with coverage instrumentation; the rest of the
# engine is linked as is. The seed corpus (tests/fuzz/visual_tokens/) holds small valid entries.
if(VL3_FUZZ)
  add_executable(fuzz-visual-tokens ${CMAKE_CURRENT_LIST_DIR}/fuzz_visual_tokens.c
    ${CMAKE_SOURCE_DIR}/engine/src/visual_tokens.c)
  target_include_directories(fuzz-visual-tokens PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
    ${CMAKE_SOURCE_DIR}/engine/include)
  target_compile_options(fuzz-visual-tokens PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-visual-tokens PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-visual-tokens PRIVATE vl3engine vl3common PkgConfig::ZSTD
    PkgConfig::XXHASH)
  add_test(NAME fuzz/visual_tokens COMMAND fuzz-visual-tokens -runs=20000
    ${CMAKE_CURRENT_LIST_DIR}/visual_tokens)
  set_tests_properties(fuzz/visual_tokens PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
