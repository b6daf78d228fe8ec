# Checkpoint loading and tiny models (loader area): safetensors reader/writer, config parsing,
# vl3_model_load of both layouts, tiny checkpoint writer, `vl3 model`. White-box cases include
# engine/src headers. The CLI cases run the vl3 binary, so it must be built first.
vl3_test(NAME test-loader SOURCES engine/test_loader.c engine/test_loader_corrupt.c
  LIBS vl3engine PkgConfig::JANSSON LABELS unit TIMEOUT 60)
target_include_directories(test-loader PRIVATE ${CMAKE_SOURCE_DIR}/engine/src)
add_dependencies(test-loader vl3)
