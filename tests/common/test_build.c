/* test_build.c: properties of the built binaries: every binary answers --help/--version, the
 * daemon links no CUDA (or engine) library, vl3/vl3-worker start without CUDA libraries, and the
 * CUDA module exists exactly when the build enabled it. */
#include <unistd.h>

#include "test.h"

static const char *bin_dir(void)
{
    const char *e = getenv("VL3_BIN_DIR");
    return e ? e : "bin";
}

TEST(binaries_answer_help_and_version)
{
    static const char *const bins[] = {"vl3", "vl3d", "vl3-worker"};
    char out[8192];
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
        ASSERT_EQ(test_sh(out, sizeof(out), "%s/%s --help", bin_dir(), bins[i]), 0);
        ASSERT_STR_CONTAINS(out, "usage:");
        ASSERT_EQ(test_sh(out, sizeof(out), "%s/%s --version", bin_dir(), bins[i]), 0);
        ASSERT_STR_CONTAINS(out, VL3_VERSION);
    }
    static const char *const subs[] = {"run", "tokenize", "model", "enqueue", "status", "db",
                                       "bench", "search"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 %s --help", bin_dir(), subs[i]), 0);
        ASSERT_STR_CONTAINS(out, "usage: vl3 ");
    }
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3 frobnicate 2>&1", bin_dir()), 2);
    ASSERT_STR_CONTAINS(out, "unknown command");
    return 0;
}

TEST(check_config_validates)
{
    char out[8192], conf[4096];
    snprintf(conf, sizeof(conf), "%s/vl3d.conf", test_tmpdir());
    ASSERT_EQ(test_sh(out, sizeof(out), "cp %s/config/vl3d.conf.example %s && %s/vl3d -c %s "
                      "--check-config 2>&1", test_source_dir(), conf, bin_dir(), conf), 0);
    ASSERT_STR_CONTAINS(out, "is valid");
    ASSERT_EQ(test_sh(out, sizeof(out), "printf 'workers.count = 0\\n' > %s && %s/vl3d -c %s "
                      "--check-config 2>&1", conf, bin_dir(), conf), 1);
    ASSERT_STR_CONTAINS(out, "vl3d.conf:1");
    ASSERT_STR_CONTAINS(out, "workers.count");
    ASSERT_EQ(test_sh(out, sizeof(out), "%s/vl3-worker -c %s/config/vl3-worker.conf.example "
                      "--check-config 2>&1", bin_dir(), test_source_dir()), 0);
    return 0;
}

TEST(daemon_links_no_cuda_and_no_engine)
{
    char out[16384];
    ASSERT_EQ(test_sh(out, sizeof(out), "readelf -d %s/vl3d", bin_dir()), 0);
    ASSERT_STR_CONTAINS(out, "NEEDED");
    ASSERT(!strstr(out, "cuda") && !strstr(out, "cublas") && !strstr(out, "vl3cuda"));
    ASSERT_EQ(test_sh(out, sizeof(out), "nm -C %s/vl3d | grep -c ' vl3_model_' || true",
                      bin_dir()), 0);
    ASSERT_EQ(atoi(out), 0);
    /* vl3 and vl3-worker load CUDA at run time only */
    static const char *const bins[] = {"vl3", "vl3-worker"};
    for (size_t i = 0; i < 2; i++) {
        ASSERT_EQ(test_sh(out, sizeof(out), "readelf -d %s/%s", bin_dir(), bins[i]), 0);
        ASSERT(!strstr(out, "libcuda") && !strstr(out, "libcublas"));
    }
    return 0;
}

TEST(cuda_module_matches_build_option)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/libvl3cuda.so", bin_dir());
#ifdef VL3_TEST_HAVE_CUDA
    char out[16384];
    ASSERT_EQ(access(path, R_OK), 0);
    ASSERT_EQ(test_sh(out, sizeof(out), "readelf -d %s", path), 0);
    ASSERT_STR_CONTAINS(out, "libcudart");
    ASSERT_EQ(test_sh(out, sizeof(out), "nm -D --defined-only %s", path), 0);
    ASSERT_STR_CONTAINS(out, "vl3_cuda_backend_ops");
    /* cubins for the named architectures are in the fat binary (their ELF notes name them;
     * cuobjdump is not part of the minimal toolkit installed here) */
    ASSERT_EQ(test_sh(out, sizeof(out), "grep -ao 'sm_90a\\|sm_80' %s | sort -u", path), 0);
    ASSERT_STR_EQ(out, "sm_80\nsm_90a\n");
#else
    ASSERT(access(path, F_OK) != 0);
#endif
    return 0;
}

/* tools/grafana/vl3d.json parses, and every vl3_* metric its queries use is one metrics.c
 * exports (histogram series _bucket/_sum/_count map to the histogram's name) */
TEST(grafana_dashboard_uses_exported_metrics)
{
    char out[4096];
    const char *src = test_source_dir();
    if (test_sh(NULL, 0, "command -v python3 >/dev/null") != 0)
        SKIP("python3 missing");
    ASSERT_EQ(test_sh(out, sizeof(out), "python3 -m json.tool '%s/tools/grafana/vl3d.json' "
                                        ">/dev/null 2>&1 && echo parsed", src),
              0);
    ASSERT_STR_CONTAINS(out, "parsed");
    /* names used by the queries, one per line */
#define DASHBOARD_NAMES                                                                            \
    "python3 -c 'import json,re,sys; d=json.load(open(sys.argv[1])); "                            \
    "print(\"\\n\".join(sorted({re.sub(\"_(bucket|sum|count)$\",\"\",m) "                         \
    "for p in d[\"panels\"] for t in p[\"targets\"] "                                            \
    "for m in re.findall(\"vl3_[a-z_]+\", t[\"expr\"])})))' "                                     \
    "'%s/tools/grafana/vl3d.json'"
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), DASHBOARD_NAMES, src);
    ASSERT_EQ(test_sh(out, sizeof(out), "%s | wc -l", cmd), 0);
    ASSERT_EQ(atoi(out) >= 20, 1); /* the dashboard covers most of the exported metrics */
    ASSERT_EQ(test_sh(out, sizeof(out),
                      "%s | while read -r m; do grep -q \"\\\"$m\\\"\" '%s/daemon/src/metrics.c' "
                      "|| echo \"missing $m\"; done",
                      cmd, src),
              0);
    ASSERT_STR_EQ(out, "");
    return 0;
}
