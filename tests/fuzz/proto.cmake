# libFuzzer harness for the worker protocol decoder (only with -DVL3_FUZZ=ON and clang).
if(VL3_FUZZ)
  add_executable(fuzz_proto ${CMAKE_CURRENT_LIST_DIR}/fuzz_proto.c)
  target_compile_options(fuzz_proto PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_proto PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_proto PRIVATE vl3common)
endif()
