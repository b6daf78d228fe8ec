# Warning set for C (STYLE B10); -Werror only when VL3_WERROR is on (CI). -Wpointer-arith:
# arithmetic on void pointers (the backend's pools are void *) counts bytes, not elements.
set(VL3_C_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
    -Wvla -Wundef -Wpointer-arith -Wno-unused-parameter)
# Truncated diagnostics are intentional (bounded message buffers); clang has no such warning.
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
  list(APPEND VL3_C_WARNINGS -Wno-format-truncation)
endif()
if(VL3_WERROR)
  list(APPEND VL3_C_WARNINGS -Werror)
endif()
add_compile_options("$<$<COMPILE_LANGUAGE:C>:${VL3_C_WARNINGS}>")
if(VL3_NATIVE)
  add_compile_options("$<$<COMPILE_LANGUAGE:C>:-march=native>")
endif()
