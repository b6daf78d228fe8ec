# bench-onednn-gemm (issue 16): oneDNN's bf16 matmul against vl3's own bf16 GEMM, timed side by side
# and checked for agreement. Built only where Debian's libdnnl-dev is installed; it is neither a
# dependency of the product nor a CTest test (CI has no libdnnl). Run: build/bin/bench-onednn-gemm
find_path(VL3_DNNL_INCLUDE oneapi/dnnl/dnnl.h)
find_library(VL3_DNNL_LIB dnnl)
if(VL3_DNNL_INCLUDE AND VL3_DNNL_LIB)
  add_executable(bench-onednn-gemm ${CMAKE_CURRENT_LIST_DIR}/bench_onednn_gemm.c)
  target_include_directories(bench-onednn-gemm PRIVATE ${VL3_DNNL_INCLUDE}
    ${CMAKE_SOURCE_DIR}/engine/src ${CMAKE_SOURCE_DIR}/engine/backend
    ${CMAKE_SOURCE_DIR}/engine/backend/cpu)
  target_link_libraries(bench-onednn-gemm PRIVATE vl3engine ${VL3_DNNL_LIB} ${CMAKE_DL_LIBS} m)
endif()
