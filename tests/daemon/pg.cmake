# PostgreSQL side of vl3d (schema, migrations, store, pg adapter, vl3 db/status): integration
# tests against the shared "pg" fixture server; the adapter's restart case starts its own server.
vl3_test(NAME test-pg
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pg.c ${CMAKE_CURRENT_LIST_DIR}/test_pg_adapter.c
  LIBS vl3daemon LABELS integration FIXTURES pg TIMEOUT 60)
add_dependencies(test-pg vl3)
