# Oracle: `vl3 run --dump` against goldens written by transformers' VideoLlama3 (native layout,
# float32 CPU) with tools/oracle/gen; the check itself needs only /usr/bin/python3 + numpy.
# One test per golden case (tests/fixtures/oracle/<case>/); docs/oracle.md lists the known
# differences the check tolerates. The goldens are float32: vl3 run is held to --precision f32.
file(GLOB VL3_ORACLE_CASES LIST_DIRECTORIES true RELATIVE ${CMAKE_SOURCE_DIR}/tests/fixtures/oracle
  ${CMAKE_SOURCE_DIR}/tests/fixtures/oracle/*)
foreach(c ${VL3_ORACLE_CASES})
  if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/fixtures/oracle/${c})
    add_test(NAME oracle/${c} COMMAND /usr/bin/python3
      ${CMAKE_CURRENT_LIST_DIR}/oracle_check.py $<TARGET_FILE:vl3>
      ${CMAKE_SOURCE_DIR}/tests/fixtures/oracle ${CMAKE_BINARY_DIR}/oracle/${c} ${c})
    set_tests_properties(oracle/${c} PROPERTIES LABELS "oracle;unit" TIMEOUT 120
      ENVIRONMENT VL3_PRECISION=f32
      SKIP_RETURN_CODE 77)
  endif()
endforeach()

# The tokenizer against Hugging Face's Rust tokenizers (tests/fixtures/tokenizer/corpus.ref.jsonl,
# written by tools/oracle/gen_tokenizer.py): the corpus cases of test-tokenizer, under this label.
foreach(c tokenizer_qwen_corpus tokenizer_tiny_corpus)
  add_test(NAME oracle/${c} COMMAND test-tokenizer ${c})
  set_tests_properties(oracle/${c} PROPERTIES LABELS "oracle" TIMEOUT 120 SKIP_RETURN_CODE 77)
endforeach()
