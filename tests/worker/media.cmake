# Media pipeline tests (worker/src/media.c, sample.c, paths.c): exactness against the ffmpeg CLI,
# numpy subsampling, policy refusals. Clips come from tools/gen_media.sh (seconds to make).
vl3_test(NAME test-media SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_media.c LIBS vl3worker
  LABELS unit TIMEOUT 120)
target_compile_definitions(test-media PRIVATE
  VL3_GEN_MEDIA="${CMAKE_SOURCE_DIR}/tools/gen_media.sh"
  VL3_MEDIA_TEST_DIR="${CMAKE_BINARY_DIR}/media-test")
