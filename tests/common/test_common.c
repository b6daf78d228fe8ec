/* test_common.c: unit tests of libvl3common: error codes, config parser, JSON getters, utils. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stddef.h>
#include <unistd.h>

#include "test.h"
#include "vl3/conf.h"
#include "vl3/json.h"
#include "vl3/log.h"
#include "vl3/util.h"

TEST(strerror_covers_both_ranges)
{
    ASSERT_STR_EQ(vl3_strerror(0), "success");
    ASSERT_STR_EQ(vl3_strerror(-ENOENT), "No such file or directory");
    ASSERT_STR_EQ(vl3_strerror(VL3_E_FORMAT), "invalid file format");
    ASSERT_STR_EQ(vl3_strerror(VL3_E_SHAPE), "tensor shape mismatch");
    ASSERT_STR_EQ(vl3_strerror(VL3_E_LAST), "unknown error");
    ASSERT_STR_EQ(vl3_strerror(-99999), "unknown error");
    for (int c = VL3_E_BASE - 1; c > VL3_E_LAST; c--)
        ASSERT(strcmp(vl3_strerror(c), "unknown error") != 0);
    return 0;
}

TEST(error_set_and_prefix)
{
    vl3_error e = {0};
    ASSERT_EQ(vl3_error_set(&e, VL3_E_FORMAT, "tensor \"%s\" truncated", "x"), VL3_E_FORMAT);
    ASSERT_STR_EQ(e.msg, "tensor \"x\" truncated");
    vl3_error_prefix(&e, "loading \"%s\"", "m.safetensors");
    ASSERT_STR_EQ(e.msg, "loading \"m.safetensors\": tensor \"x\" truncated");
    ASSERT_EQ(vl3_error_set(NULL, -EINVAL, "ignored"), -EINVAL);
    ASSERT_STR_EQ(vl3_error_text(&e, VL3_E_FORMAT), e.msg);
    ASSERT_STR_EQ(vl3_error_text(&e, -EIO), vl3_strerror(-EIO));
    return 0;
}

struct demo_conf {
    int flag;
    int64_t count, bytes, wait_ms;
    double ratio;
    int mode;
    char *name, *dir;
};
static const char *const modes[] = {"exact", "fast", NULL};
static const vl3_conf_option demo_table[] = {
    {"flag", VL3_CONF_BOOL, offsetof(struct demo_conf, flag), "no", 0, 0, NULL, 0, ""},
    {"count", VL3_CONF_INT, offsetof(struct demo_conf, count), "4", 1, 10, NULL, 0, ""},
    {"bytes", VL3_CONF_SIZE, offsetof(struct demo_conf, bytes), "1M", 0, 0, NULL, 0, ""},
    {"wait", VL3_CONF_DURATION, offsetof(struct demo_conf, wait_ms), "2s", 0, 0, NULL, 0, ""},
    {"ratio", VL3_CONF_DOUBLE, offsetof(struct demo_conf, ratio), "0.5", 0, 1, NULL, 0, ""},
    {"media.mode", VL3_CONF_ENUM, offsetof(struct demo_conf, mode), "fast", 0, 0, modes, 0, ""},
    {"name", VL3_CONF_STRING, offsetof(struct demo_conf, name), "vl3", 0, 0, NULL, 0, ""},
    {"dir", VL3_CONF_PATH, offsetof(struct demo_conf, dir), NULL, 0, 0, NULL, 0, ""},
    {0},
};

static int write_file(const char *path, const char *text)
{
    return vl3_file_write(path, text, strlen(text), NULL);
}

TEST(conf_defaults_and_file)
{
    struct demo_conf c;
    vl3_error e = {0};
    ASSERT_OK_E(vl3_conf_defaults(demo_table, &c, &e), &e);
    ASSERT_EQ(c.flag, 0);
    ASSERT_EQ(c.count, 4);
    ASSERT_EQ(c.bytes, 1048576);
    ASSERT_EQ(c.wait_ms, 2000);
    ASSERT_EQ(c.mode, 1);
    ASSERT_STR_EQ(c.name, "vl3");
    ASSERT(c.dir == NULL);
    char path[4096];
    snprintf(path, sizeof(path), "%s/ok.conf", test_tmpdir());
    ASSERT_OK(write_file(path, "# comment\nflag = yes\ncount=7 # trailing\nbytes = 2G\n"
                               "wait = 150ms\nratio = 0.25\n[media]\nmode = exact\n"
                               "[]\n"));
    /* "[]" is malformed: the error must cite the line */
    int r = vl3_conf_load(demo_table, &c, path, &e);
    ASSERT_EQ(r, VL3_E_CONFIG);
    ASSERT_STR_CONTAINS(e.msg, "ok.conf:9");
    ASSERT_OK(write_file(path, "flag = yes\ncount=7 # trailing\nbytes = 2G\nwait = 150ms\n"
                               "ratio = 0.25\nname = \"a b # c\"\ndir=/srv\n[media]\nmode = exact\n"));
    ASSERT_OK_E(vl3_conf_load(demo_table, &c, path, &e), &e);
    ASSERT_EQ(c.flag, 1);
    ASSERT_EQ(c.count, 7);
    ASSERT_EQ(c.bytes, 2147483648LL);
    ASSERT_EQ(c.wait_ms, 150);
    ASSERT_NEAR(c.ratio, 0.25, 0);
    ASSERT_EQ(c.mode, 0);
    ASSERT_STR_EQ(c.name, "a b # c");
    ASSERT_STR_EQ(c.dir, "/srv");
    vl3_conf_free_strings(demo_table, &c);
    ASSERT(c.name == NULL);
    return 0;
}

TEST(conf_errors_cite_file_line_and_option)
{
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"count = 11\n", ":1: value of \"count\" out of range"},
        {"\ncount = 3x\n", ":2: invalid integer for \"count\""},
        {"flag = maybe\n", "invalid boolean for \"flag\""},
        {"nosuch = 1\n", "unknown option \"nosuch\""},
        {"dir = relative/path\n", "must be an absolute path"},
        {"[media]\nmode = slow\n", ":2: invalid value for \"media.mode\""},
        {"just words\n", "expected \"key = value\""},
        {"bytes = 12 parsecs\n", "invalid size for \"bytes\""},
        {"ratio = 2\n", "out of range"},
    };
    char path[4096];
    snprintf(path, sizeof(path), "%s/bad.conf", test_tmpdir());
    for (size_t i = 0; i < VL3_ARRAY_SIZE(cases); i++) {
        struct demo_conf c;
        vl3_error e = {0};
        ASSERT_OK(vl3_conf_defaults(demo_table, &c, &e));
        ASSERT_OK(write_file(path, cases[i].text));
        ASSERT_EQ(vl3_conf_load(demo_table, &c, path, &e), VL3_E_CONFIG);
        ASSERT_STR_CONTAINS(e.msg, cases[i].expect);
        ASSERT_STR_CONTAINS(e.msg, "bad.conf:");
        vl3_conf_free_strings(demo_table, &c);
    }
    struct demo_conf c;
    vl3_error e = {0};
    ASSERT_OK(vl3_conf_defaults(demo_table, &c, &e));
    ASSERT_EQ(vl3_conf_load(demo_table, &c, "/nonexistent/x.conf", &e), -ENOENT);
    ASSERT_STR_CONTAINS(e.msg, "/nonexistent/x.conf");
    vl3_conf_free_strings(demo_table, &c);
    return 0;
}

TEST(value_parsers_reject_garbage)
{
    int64_t v;
    double d;
    int b;
    ASSERT_OK(vl3_parse_int64("-42", &v));
    ASSERT_EQ(v, -42);
    ASSERT_EQ(vl3_parse_int64("", &v), -EINVAL);
    ASSERT_EQ(vl3_parse_int64(" 1", &v), -EINVAL);
    ASSERT_EQ(vl3_parse_int64("1 ", &v), -EINVAL);
    ASSERT_EQ(vl3_parse_int64("99999999999999999999", &v), -ERANGE);
    ASSERT_OK(vl3_parse_duration_ms("1.5m", &v));
    ASSERT_EQ(v, 90000);
    ASSERT_OK(vl3_parse_duration_ms("3", &v));
    ASSERT_EQ(v, 3000);
    ASSERT_EQ(vl3_parse_duration_ms("-3s", &v), -EINVAL);
    ASSERT_OK(vl3_parse_size("512KiB", &v));
    ASSERT_EQ(v, 524288);
    ASSERT_EQ(vl3_parse_double("nan", &d), -ERANGE);
    ASSERT_EQ(vl3_parse_bool("On", &b), 0);
    ASSERT_EQ(b, 1);
    ASSERT_EQ(vl3_parse_bool("2", &b), -EINVAL);
    return 0;
}

TEST(json_getters_name_the_field)
{
    json_t *j = NULL;
    vl3_error e = {0};
    const char *doc = "{\"input\": \"/a.mp4\", \"fps\": 2, \"ratio\": 0.5, \"on\": true,"
                      " \"tasks\": [\"caption\"], \"s\": {\"x\": 1}, \"n\": null}";
    ASSERT_OK_E(vl3_json_load_buf(doc, strlen(doc), &j, &e), &e);
    const char *s;
    int64_t i;
    double d;
    int b;
    json_t *o;
    ASSERT_OK(vl3_json_get_string(j, "input", &s, &e));
    ASSERT_STR_EQ(s, "/a.mp4");
    ASSERT_OK(vl3_json_get_int(j, "fps", &i, &e));
    ASSERT_EQ(i, 2);
    ASSERT_OK(vl3_json_get_number(j, "fps", &d, &e));
    ASSERT_OK(vl3_json_get_number(j, "ratio", &d, &e));
    ASSERT_OK(vl3_json_get_bool(j, "on", &b, &e));
    ASSERT_OK(vl3_json_get_array(j, "tasks", &o, &e));
    ASSERT_OK(vl3_json_get_object(j, "s", &o, &e));
    ASSERT_EQ(vl3_json_get_string(j, "missing", &s, &e), -ENOENT);
    ASSERT_EQ(vl3_json_get_string(j, "n", &s, &e), -ENOENT);
    ASSERT_EQ(vl3_json_get_string(j, "fps", &s, &e), VL3_E_FORMAT);
    ASSERT_STR_EQ(e.msg, "field \"fps\" must be a string");
    ASSERT_EQ(vl3_json_get_int(j, "ratio", &i, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "\"ratio\" must be an integer");
    json_decref(j);
    ASSERT_EQ(vl3_json_load_buf("{\"a\":1,\"a\":2}", 13, &j, &e), VL3_E_FORMAT);
    ASSERT_EQ(vl3_json_load_buf("{\"a\":", 5, &j, &e), VL3_E_FORMAT);
    ASSERT_STR_CONTAINS(e.msg, "line 1");
    return 0;
}

TEST(file_read_limits)
{
    char path[4096], *buf;
    size_t len;
    vl3_error e = {0};
    snprintf(path, sizeof(path), "%s/f.txt", test_tmpdir());
    ASSERT_OK(write_file(path, "hello"));
    ASSERT_OK(vl3_file_read(path, 100, &buf, &len, &e));
    ASSERT_EQ(len, 5);
    ASSERT_STR_EQ(buf, "hello");
    free(buf);
    ASSERT_EQ(vl3_file_read(path, 4, &buf, &len, &e), VL3_E_LIMIT);
    ASSERT_EQ(vl3_file_read(test_tmpdir(), 4, &buf, &len, &e), -EINVAL);
    size_t m;
    ASSERT_EQ(vl3_mul_size(SIZE_MAX / 2, 3, &m), -EOVERFLOW);
    ASSERT_OK(vl3_mul_size(1000, 1000, &m));
    ASSERT_EQ(m, 1000000);
    return 0;
}

TEST(log_levels_parse)
{
    ASSERT_EQ(vl3_log_level_parse("debug"), VL3_LOG_DEBUG);
    ASSERT_EQ(vl3_log_level_parse("WARNING"), VL3_LOG_WARNING);
    ASSERT_EQ(vl3_log_level_parse("error"), VL3_LOG_ERR);
    ASSERT_EQ(vl3_log_level_parse("5"), 5);
    ASSERT_EQ(vl3_log_level_parse("loud"), -EINVAL);
    return 0;
}

/* A logged message with a newline and other control characters stays one record: "\n<0>" from
 * a job's text cannot forge an emergency record (issue 14 item 11). */
TEST(log_escapes_control_characters)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/log.txt", test_tmpdir());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT(fd >= 0);
    int saved = dup(STDERR_FILENO);
    ASSERT(saved >= 0 && dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    vl3_log_set_format(1, 0);
    vl3_log_notice("bad input \"%s\"", "/m/a.mp4\n<0>forged\x1b[2J\x7f");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    char buf[512];
    FILE *f = fopen(path, "r");
    ASSERT(f != NULL);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    ASSERT_STR_EQ(buf, "<5>bad input \"/m/a.mp4\\x0a<0>forged\\x1b[2J\\x7f\"\n");
    return 0;
}

/* vl3_strbuf_printf appends across growth (from empty and from a preallocated buffer) and keeps
 * the text NUL-terminated: the result equals the same text formatted in one go. */
TEST(strbuf_appends_across_growth)
{
    vl3_strbuf a = {0};
    char want[8192];
    size_t w = 0;
    for (int i = 0; i < 300; i++) {
        vl3_strbuf_printf(&a, "line %d: %s;", i, i % 7 ? "x" : "a longer piece of text");
        w += (size_t)snprintf(want + w, sizeof(want) - w, "line %d: %s;", i,
                              i % 7 ? "x" : "a longer piece of text");
    }
    ASSERT(!a.oom);
    ASSERT_EQ(a.len, w);
    ASSERT_STR_EQ(a.s, want);
    free(a.s);
    vl3_strbuf b = {malloc(4), 0, 4, 0};
    ASSERT(b.s);
    b.s[0] = 0;
    vl3_strbuf_printf(&b, "%s", "");
    ASSERT_STR_EQ(b.s, "");
    vl3_strbuf_printf(&b, "%s-%d", "abcdef", 42);
    ASSERT_STR_EQ(b.s, "abcdef-42");
    ASSERT_EQ(b.len, 9);
    free(b.s);
    return 0;
}
