# Worker pipeline tests (worker/src/worker*.c). Unit: the continuous-batching scheduler on a fake
# model, the memory budget, the frame I/O. Integration: the real vl3-worker process on a tiny
# model and generated clips (protocol, errors, batching), and vl3d driving it end to end.
file(GLOB VL3_TEST_WORKER_UNIT CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_worker_sched.c
  ${CMAKE_CURRENT_LIST_DIR}/test_worker_io.c)
vl3_test(NAME test-worker SOURCES ${VL3_TEST_WORKER_UNIT} LIBS vl3worker LABELS unit TIMEOUT 60)
vl3_test(NAME test-worker-proc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_worker_proc.c
  LIBS vl3common PkgConfig::JANSSON LABELS integration TIMEOUT 300)
add_dependencies(test-worker-proc vl3-worker vl3)
