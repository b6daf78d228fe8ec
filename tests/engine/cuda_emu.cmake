# The CUDA backend's kernels on the host CUDA emulator (docs/cuda-emu.md), against the CPU ops,
# and the emulator's self-tests. Needs no CUDA toolkit: built in every configuration.
vl3_cuda_emu_sources(VL3_TEST_CUDA_EMU_GEN ${CMAKE_CURRENT_LIST_DIR}/cuda_emu_selftest.cu)
vl3_test(NAME test-cuda-emu SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_emu.c
  ${VL3_TEST_CUDA_EMU_GEN} LIBS vl3cuda_emu vl3engine LABELS "unit;cuda-emu" TIMEOUT 120)
target_include_directories(test-cuda-emu PRIVATE ${CMAKE_SOURCE_DIR}/engine/backend
  ${CMAKE_SOURCE_DIR}/engine/backend/cpu ${CMAKE_SOURCE_DIR}/engine/backend/cuda)
target_compile_options(test-cuda-emu PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:${VL3_CUDA_EMU_CXX_FLAGS}>)

# The emulated CUDA backend ("cuda-emu", bf16) op by op against the CPU backend, through the
# backend vtable, over a grid of shapes (tests/engine/test_cuda_backend.c).
vl3_test(NAME test-cuda-backend SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuda_backend.c
  LIBS vl3engine LABELS "unit;cuda-emu" TIMEOUT 300)
target_include_directories(test-cuda-backend PRIVATE ${CMAKE_SOURCE_DIR}/engine/backend
  ${CMAKE_SOURCE_DIR}/engine/backend/cpu ${CMAKE_SOURCE_DIR}/engine/src)

# Label gpu: the same cases on the real libvl3cuda.so (VL3_TEST_BACKEND=cuda); each skips (77)
# without the module or a device. tools/gpu-check runs them on a lent GPU machine.
file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/test_cuda_backend.c vl3_gpu_cases
  REGEX "^TEST\\([a-z0-9_]+\\)")
foreach(line ${vl3_gpu_cases})
  string(REGEX REPLACE "^TEST\\(([a-z0-9_]+)\\).*" "\\1" case "${line}")
  add_test(NAME gpu/test-cuda-backend/${case} COMMAND test-cuda-backend ${case})
  set_tests_properties(gpu/test-cuda-backend/${case} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77
    TIMEOUT 300 ENVIRONMENT
    "VL3_TEST_BACKEND=cuda;VL3_BIN_DIR=${CMAKE_BINARY_DIR}/bin;VL3_FIXTURE_DIR=${CMAKE_BINARY_DIR}/fixtures")
endforeach()
if(VL3_HAVE_CUDA)
  target_compile_definitions(test-cuda-backend PRIVATE VL3_TEST_HAVE_CUDA=1)
  add_dependencies(test-cuda-backend vl3cuda)
endif()
