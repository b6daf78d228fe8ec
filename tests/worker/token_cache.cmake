# The token cache (worker/src/token_cache*.c): key sensitivity (unit) and the PostgreSQL store
# against real servers (integration): hit, miss, damaged chunk, LRU eviction under a budget, two
# writers racing on one key, missing tables, and the server stopped during a write; and
# `vl3 run --cache` on tiny models: a hit equals the cold path bit for bit, key sensitivity.
vl3_test(NAME test-token-cache-key SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_token_cache_key.c
  LIBS vl3worker LABELS unit TIMEOUT 60)
vl3_test(NAME test-token-cache-pg SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_token_cache_pg.c
  LIBS vl3worker vl3daemon PkgConfig::PQ LABELS integration FIXTURES pg TIMEOUT 300)
add_dependencies(test-token-cache-pg vl3)
