# libFuzzer harness for the media adapter (worker/src/media.c through sample.c). Built only with
# -DVL3_FUZZ=ON and clang: cmake -S . -B build-fuzz -DVL3_FUZZ=ON -DCMAKE_C_COMPILER=clang
# Run: build-fuzz/bin/fuzz-media -max_total_time=60 -max_len=65536 CORPUS_DIR
# (seed the corpus with tools/gen_media.sh clips).
if(VL3_FUZZ)
  add_executable(fuzz-media ${CMAKE_CURRENT_LIST_DIR}/fuzz_media.c)
  target_link_libraries(fuzz-media PRIVATE vl3worker)
  target_compile_options(fuzz-media PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-media PRIVATE -fsanitize=fuzzer,address,undefined)
endif()
if(VL3_FUZZ)
  # coverage feedback from the code under test
  target_compile_options(vl3worker PRIVATE -fsanitize=fuzzer-no-link)
  # every program linking the instrumented library needs the coverage runtime
  target_link_options(vl3worker INTERFACE -fsanitize=fuzzer-no-link)
endif()
