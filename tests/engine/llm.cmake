# Engine I (LLM): CPU backend ops against double-precision references, the decoder forward
# against a double-precision implementation on tiny random models, KV cache / batching
# equivalences, the sampler, `vl3 run`. White-box cases include engine/src and engine/backend.
vl3_test(NAME test-backend-ops SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_backend_ops.c
  LIBS vl3engine LABELS unit TIMEOUT 60)
target_include_directories(test-backend-ops PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
  ${CMAKE_SOURCE_DIR}/engine/backend)
file(GLOB VL3_TEST_LLM_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_llm*.c)
if(VL3_TEST_LLM_SOURCES)
  vl3_test(NAME test-llm SOURCES ${VL3_TEST_LLM_SOURCES}
    LIBS vl3engine LABELS unit TIMEOUT 120)
  target_include_directories(test-llm PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
    ${CMAKE_SOURCE_DIR}/engine/backend)
  add_dependencies(test-llm vl3)
endif()
# The CUDA backend's matrix-product descriptors executed on the host (cuBLASLt semantics).
vl3_test(NAME test-gemm-desc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gemm_desc.c
  LIBS vl3engine LABELS "unit;cuda-emu" TIMEOUT 60)
target_include_directories(test-gemm-desc PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
  ${CMAKE_SOURCE_DIR}/engine/backend)
# The CPU backend's bf16 mode: AMX attention and AVX-512 activations against double references,
# and `vl3 run` in bf16 mode against f32 mode on a tiny model.
vl3_test(NAME test-cpu-attn-bf16 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cpu_attention_bf16.c
  LIBS vl3engine LABELS unit TIMEOUT 180)
add_dependencies(test-cpu-attn-bf16 vl3)
target_include_directories(test-cpu-attn-bf16 PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
  ${CMAKE_SOURCE_DIR}/engine/backend ${CMAKE_SOURCE_DIR}/engine/backend/cpu)
