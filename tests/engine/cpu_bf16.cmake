# The CPU backend's bf16 precision mode: every bf16 GEMM path (AMX, AVX512-BF16, f32 fallbacks)
# forced in turn against double sums of the same rounded inputs; a tiny model greedy in bf16 vs
# f32 mode. Paths the CPU cannot run skip (exit 77).
vl3_test(NAME test-cpu-bf16 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cpu_bf16.c
  LIBS vl3engine LABELS unit TIMEOUT 120)
target_include_directories(test-cpu-bf16 PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
  ${CMAKE_SOURCE_DIR}/engine/backend ${CMAKE_SOURCE_DIR}/engine/backend/cpu)
