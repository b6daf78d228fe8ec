# The visual tokens of a window (engine/src/visual_tokens.c): the object, its serialization for
# the token cache (round trip bit-exact, every damaged byte detected) and the vision identity.
vl3_test(NAME test-visual-tokens SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_visual_tokens.c
  LIBS vl3engine LABELS unit TIMEOUT 120)
