# Engine II (vision): preprocessing, DiffFP, prompts, vision ops and encoder, image decoding.
vl3_test(NAME test-preprocess SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_preprocess.c
  LIBS vl3engine PkgConfig::JANSSON LABELS unit TIMEOUT 120)
target_include_directories(test-preprocess PRIVATE ${CMAKE_SOURCE_DIR}/engine/src)
