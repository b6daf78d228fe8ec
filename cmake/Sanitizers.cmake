# VL3_SANITIZE=address,undefined (CI unit tests) or thread (daemon).
if(VL3_SANITIZE)
  set(_san -fsanitize=${VL3_SANITIZE} -fno-omit-frame-pointer)
  if(VL3_SANITIZE MATCHES "undefined")
    list(APPEND _san -fno-sanitize-recover=undefined)
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:C>:${_san}>")
  add_link_options(${_san})
endif()
