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

# The bf16 goldens (<case>_bf16, transformers in bf16; their case.json makes the check pass
# --precision bf16, overriding VL3_PRECISION) must fail on a deliberately wrong model: every weight
# scaled by 1.02 (--std 0.102 instead of 0.1); the check inverts its status under
# VL3_ORACLE_PERTURB_STD (docs/oracle.md, "bf16 goldens").
add_test(NAME oracle/bf16_perturbed_fails COMMAND /usr/bin/python3
  ${CMAKE_CURRENT_LIST_DIR}/oracle_check.py $<TARGET_FILE:vl3>
  ${CMAKE_SOURCE_DIR}/tests/fixtures/oracle ${CMAKE_BINARY_DIR}/oracle/bf16_perturbed
  text_only_bf16 photo_64x48_bf16 v_long_max12_bf16)
set_tests_properties(oracle/bf16_perturbed_fails PROPERTIES LABELS "oracle;unit" TIMEOUT 120
  ENVIRONMENT VL3_ORACLE_PERTURB_STD=0.102 SKIP_RETURN_CODE 77)

# The tokenizer against Hugging Face's Rust tokenizers (tests/fixtures/tokenizer/corpus.ref.jsonl,
# written by tools/oracle/gen_tokenizer.py): the corpus cases of test-tokenizer, under this label.
foreach(c tokenizer_qwen_corpus tokenizer_tiny_corpus)
  add_test(NAME oracle/${c} COMMAND test-tokenizer ${c})
  set_tests_properties(oracle/${c} PROPERTIES LABELS "oracle" TIMEOUT 120 SKIP_RETURN_CODE 77)
endforeach()
