# libFuzzer target for the safetensors header parser and the config.json parser (loader area). Only with -DVL3_FUZZ=ON and
# clang: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DVL3_FUZZ=ON -DVL3_CUDA=OFF
#   build-fuzz/bin/fuzz-safetensors -max_total_time=60 tests/fuzz/safetensors
# The reader sources are compiled into the fuzzer with coverage instrumentation; the rest of the
# engine is linked as is. The seed corpus lives in tests/fuzz/safetensors/.
if(VL3_FUZZ)
  add_executable(fuzz-safetensors ${CMAKE_CURRENT_LIST_DIR}/fuzz_safetensors.c
    ${CMAKE_SOURCE_DIR}/engine/src/safetensors.c ${CMAKE_SOURCE_DIR}/engine/src/model_config.c)
  target_include_directories(fuzz-safetensors PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
    ${CMAKE_SOURCE_DIR}/engine/include)
  target_compile_options(fuzz-safetensors PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-safetensors PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-safetensors PRIVATE vl3common PkgConfig::JANSSON)
  add_test(NAME fuzz/safetensors COMMAND fuzz-safetensors -runs=20000
    ${CMAKE_CURRENT_LIST_DIR}/safetensors)
  set_tests_properties(fuzz/safetensors PROPERTIES LABELS fuzz TIMEOUT 120)
endif()
