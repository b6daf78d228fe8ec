# Engine II (vision): preprocessing, DiffFP, prompts, vision ops and encoder, image decoding.
vl3_test(NAME test-preprocess SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_preprocess.c
  LIBS vl3engine PkgConfig::JANSSON LABELS unit TIMEOUT 120)
target_include_directories(test-preprocess PRIVATE ${CMAKE_SOURCE_DIR}/engine/src)
file(GLOB VL3_TEST_VISION_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_vision*.c)
list(REMOVE_ITEM VL3_TEST_VISION_SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_vision_image.c)
vl3_test(NAME test-vision SOURCES ${VL3_TEST_VISION_SOURCES}
  LIBS vl3engine PkgConfig::JANSSON LABELS unit TIMEOUT 120)
target_include_directories(test-vision PRIVATE ${CMAKE_SOURCE_DIR}/engine/src
  ${CMAKE_SOURCE_DIR}/engine/backend)
# image decoding lives in the worker (FFmpeg)
vl3_test(NAME test-vision-image SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_vision_image.c
  LIBS vl3worker LABELS unit TIMEOUT 120)
