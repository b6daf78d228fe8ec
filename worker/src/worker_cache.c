/* worker_cache.c: the worker's use of the token cache (token_cache.h). The decode stage
 * fingerprints the input (memoized per file version: path, device, inode, size, mtime, ctime),
 * looks up the job's window list and every listed window; when all of them hit, no frame is
 * decoded and the windows go to the engine with their cached rows (the encoder skips them). Any
 * miss decodes the input as usual; windows that hit still skip preprocessing and the encoder.
 * After the encoder the engine hands each missed window to the writer thread, which serializes
 * (zstd) and uploads it off the engine thread; the job holds a pending reference until its
 * windows are stored, so its DONE (and a next question) finds them. The decode stage stores the
 * window list of a fully decoded input.
 *
 * The window list is needed because the windows that have frames are known only after sampling
 * (a last window may be empty, a stream may start late); it is a short text with its own XXH3
 * checksum: "vl3-windows 1 n=N w=0,1,... h=<hex>". */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "vl3/log.h"
#include "vl3/util.h"
#include "worker_cache.h"

int worker_cache_fingerprint(struct worker *w, const char *path, int fd, const struct stat *st,
                             char ret[TCACHE_FINGERPRINT_LEN])
{
    int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    int64_t ct = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < (int)(sizeof(w->fp_memo) / sizeof(w->fp_memo[0])); i++) {
        struct worker_fp_memo *m = &w->fp_memo[i];
        if (m->fp[0] && m->dev == (int64_t)st->st_dev && m->ino == (int64_t)st->st_ino &&
            m->size == (int64_t)st->st_size && m->mtime_ns == mt && m->ctime_ns == ct &&
            strcmp(m->path, path) == 0) {
            memcpy(ret, m->fp, TCACHE_FINGERPRINT_LEN);
            pthread_mutex_unlock(&w->lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&w->lock);
    vl3_error err = {0};
    int rc = tcache_fingerprint_fd(fd, ret, &err);
    if (rc < 0) {
        vl3_log_warning("token cache off for \"%s\": %s", path, vl3_error_text(&err, rc));
        return rc;
    }
    if (strlen(path) < sizeof(w->fp_memo[0].path)) {
        pthread_mutex_lock(&w->lock);
        struct worker_fp_memo *m = &w->fp_memo[w->fp_memo_next];
        w->fp_memo_next = (w->fp_memo_next + 1) % (int)(sizeof(w->fp_memo) / sizeof(w->fp_memo[0]));
        snprintf(m->path, sizeof(m->path), "%s", path);
        m->dev = (int64_t)st->st_dev;
        m->ino = (int64_t)st->st_ino;
        m->size = (int64_t)st->st_size;
        m->mtime_ns = mt;
        m->ctime_ns = ct;
        memcpy(m->fp, ret, TCACHE_FINGERPRINT_LEN);
        pthread_mutex_unlock(&w->lock);
    }
    return 0;
}

static int key_of(struct worker *w, const struct worker_job *job, const char *fp, int is_image,
                  int window, char key[33], char **descr)
{
    return pipeline_cache_key(&w->pl, fp, is_image ? TCACHE_MEDIA_IMAGE : TCACHE_MEDIA_VIDEO,
                              &job->sp, window, key, descr);
}

/* Give back the plan's charge for window k's entry. */
static void plan_uncharge(struct worker_cache_plan *p, int k)
{
    if (p->charged && p->charged[k] > 0) {
        if (!p->uncharged)
            worker_budget_release(p->budget, p->charged[k]);
        p->charged[k] = 0;
    }
}

void worker_cache_plan_charge(struct worker_cache_plan *p, int on)
{
    if (!p->charged || p->uncharged == !on)
        return;
    int64_t sum = 0;
    for (int k = 0; k < p->n; k++)
        sum += p->charged[k];
    if (on)
        worker_budget_charge(p->budget, sum);
    else
        worker_budget_release(p->budget, sum);
    p->uncharged = !on;
}

void worker_cache_plan_free(struct worker_cache_plan *p)
{
    for (int i = 0; i < p->n; i++) {
        plan_uncharge(p, i);
        vl3_visual_tokens_deinit(&p->vt[i]);
    }
    free(p->charged);
    free(p->vt);
    free(p->hit);
    free(p->windows);
    memset(p, 0, sizeof(*p));
}

/* Parse a window list; returns the count or -1 when damaged. */
static int parse_list(const uint8_t *b, size_t len, int **ret)
{
    char text[65536];
    if (len == 0 || len >= sizeof(text))
        return -1;
    memcpy(text, b, len);
    text[len] = '\0';
    char *h = strstr(text, " h=");
    if (!h || strlen(h + 3) != 16)
        return -1;
    char want[17];
    snprintf(want, sizeof(want), "%016llx",
             (unsigned long long)XXH3_64bits(text, (size_t)(h - text)));
    if (strcmp(h + 3, want) != 0)
        return -1;
    *h = '\0';
    int n = 0, used = 0;
    if (sscanf(text, "vl3-windows 1 n=%d w=%n", &n, &used) != 1 || used == 0 || n < 1 ||
        n > 1000000)
        return -1;
    int *wins = malloc(sizeof(int) * (size_t)n);
    if (!wins)
        return -1;
    char *s = text + used;
    for (int i = 0; i < n; i++) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 10000000 || (i + 1 < n ? *end != ',' : *end != '\0')) {
            free(wins);
            return -1;
        }
        wins[i] = (int)v;
        s = end + 1;
    }
    *ret = wins;
    return n;
}

int worker_cache_plan(struct worker *w, const struct worker_job *job, const char *fp,
                      int is_image, struct worker_cache_plan *ret)
{
    struct worker_cache_plan p = {0};
    p.budget = &w->budget;
    snprintf(p.fp, sizeof(p.fp), "%s", fp);
    p.is_image = is_image;
    if (job->cache == WORKER_CACHE_REFRESH) {
        *ret = p;
        return 0;
    }
    int n;
    if (is_image) { /* one window, no list */
        if (!(p.windows = malloc(sizeof(int))))
            return -ENOMEM;
        p.windows[0] = 0;
        n = 1;
        goto lookup;
    }
    /* the window list: window -1 of the same key */
    char lkey[33];
    if (key_of(w, job, fp, is_image, -1, lkey, NULL) < 0)
        return -ENOMEM;
    uint8_t *blob = NULL;
    size_t len = 0;
    if (!tcache_get_blob(w->tcache, lkey, &blob, &len)) {
        *ret = p;
        return 0;
    }
    n = parse_list(blob, len, &p.windows);
    free(blob);
    if (n < 0) {
        tcache_drop_damaged(w->tcache, lkey, "window list");
        *ret = p;
        return 0;
    }
lookup:;
    int max = 0;
    for (int i = 0; i < n; i++)
        if (p.windows[i] + 1 > max)
            max = p.windows[i] + 1;
    p.n_windows = n;
    p.n = max;
    p.vt = calloc((size_t)max, sizeof(*p.vt));
    p.hit = calloc((size_t)max, sizeof(*p.hit));
    p.charged = calloc((size_t)max, sizeof(*p.charged));
    if (!p.vt || !p.hit || !p.charged) {
        worker_cache_plan_free(&p);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        int k = p.windows[i];
        char key[33];
        if (key_of(w, job, fp, is_image, k, key, NULL) < 0)
            continue;
        if (pipeline_cache_lookup(&w->pl, w->tcache, key, is_image, &p.vt[k]) == 1) {
            p.hit[k] = 1;
            p.n_hits++;
            p.charged[k] = p.vt[k].n_rows * p.vt[k].dim *
                           (p.vt[k].dtype == VL3_VT_DTYPE_BF16 ? 2 : 4);
            p.charged_sum += p.charged[k];
            worker_budget_charge(&w->budget, p.charged[k]);
        }
    }
    *ret = p;
    return 0;
}

int worker_cache_unit(struct worker *w, struct worker_job *job, struct worker_cache_plan *p,
                      int win, struct worker_unit **ret)
{
    vl3_visual_tokens *vt = &p->vt[win];
    struct worker_unit *u = calloc(1, sizeof(*u));
    if (!u || pipeline_window_from_cache(&u->pw, win, p->is_image, vt) < 0) {
        free(u);
        return -ENOMEM;
    }
    u->job = job;
    pipeline_window_span(&u->pw, &job->sp);
    /* the rows it holds: before the projector as cached, after it as the engine will make them */
    const vl3_visual_tokens *v = &u->pw.vt;
    u->reserved = v->n_rows * ((int64_t)v->dim * (v->dtype == VL3_VT_DTYPE_BF16 ? 2 : 4) +
                               (int64_t)w->pl.hidden * (int64_t)sizeof(float));
    plan_uncharge(p, win);
    p->hit[win] = 0;
    u->cache = 2;
    *ret = u;
    return 0;
}

void worker_cache_miss(struct worker *w, const struct worker_job *job,
                       const struct worker_cache_plan *p, struct worker_unit *u)
{
    char *descr = NULL;
    if (key_of(w, job, p->fp, p->is_image, u->pw.window, u->key, &descr) < 0)
        return;
    if (job->cache == WORKER_CACHE_REFRESH)
        tcache_forget(w->tcache, u->key);
    u->key_descr = descr;
    u->cache = 1;
}

void worker_cache_store_windows(struct worker *w, const struct worker_job *job,
                                const struct worker_cache_plan *p, const int *wins, int n)
{
    char text[65536], lkey[33];
    char *descr = NULL;
    int len;
    if (n == 0 || p->is_image || key_of(w, job, p->fp, 0, -1, lkey, &descr) < 0)
        return;
    len = snprintf(text, sizeof(text), "vl3-windows 1 n=%d w=", n);
    for (int i = 0; i < n && len < (int)sizeof(text) - 64; i++)
        len += snprintf(text + len, sizeof(text) - (size_t)len, "%d%s", wins[i],
                        i + 1 < n ? "," : "");
    if (len >= (int)sizeof(text) - 64) {
        free(descr);
        return; /* too many windows to list: the input is always decoded */
    }
    uint64_t h = XXH3_64bits(text, (size_t)len);
    len += snprintf(text + len, sizeof(text) - (size_t)len, " h=%016llx", (unsigned long long)h);
    if (job->cache == WORKER_CACHE_REFRESH)
        tcache_forget(w->tcache, lkey);
    tcache_put_blob(w->tcache, lkey, descr, (const uint8_t *)text, (size_t)len);
    free(descr);
}

/* ---- the writer thread: serialization and upload off the engine thread ------------------- */

struct wc_item {
    struct wc_item *next;
    struct worker_job *job; /* holds one pending reference until stored */
    char key[33];
    char *descr;            /* owned */
    vl3_visual_tokens vt;
};

struct worker_cache_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct wc_item *head, *tail;
    int stopping;
};

static void *writer_main(void *arg)
{
    struct worker *w = arg;
    struct worker_cache_writer *cw = w->cache_writer;
    for (;;) {
        pthread_mutex_lock(&cw->lock);
        while (!cw->head && !cw->stopping)
            pthread_cond_wait(&cw->cond, &cw->lock);
        struct wc_item *it = cw->head;
        if (it) {
            cw->head = it->next;
            if (!cw->head)
                cw->tail = NULL;
        }
        pthread_mutex_unlock(&cw->lock);
        if (!it)
            break; /* stopping and drained */
        tcache_store(w->tcache, it->key, it->descr, &it->vt);
        vl3_visual_tokens_deinit(&it->vt);
        free(it->descr);
        pthread_mutex_lock(&w->lock);
        worker_job_unref_locked(w, it->job); /* the job's DONE waits for its stores */
        pthread_mutex_unlock(&w->lock);
        free(it);
    }
    return NULL;
}

int worker_cache_writer_start(struct worker *w)
{
    struct worker_cache_writer *cw = calloc(1, sizeof(*cw));
    if (!cw)
        return -ENOMEM;
    pthread_mutex_init(&cw->lock, NULL);
    pthread_cond_init(&cw->cond, NULL);
    w->cache_writer = cw;
    int rc = pthread_create(&cw->thread, NULL, writer_main, w);
    if (rc != 0) {
        pthread_cond_destroy(&cw->cond);
        pthread_mutex_destroy(&cw->lock);
        free(cw);
        w->cache_writer = NULL;
        return -rc;
    }
    return 0;
}

void worker_cache_writer_stop(struct worker *w)
{
    struct worker_cache_writer *cw = w->cache_writer;
    if (!cw)
        return;
    pthread_mutex_lock(&cw->lock);
    cw->stopping = 1;
    pthread_cond_signal(&cw->cond);
    pthread_mutex_unlock(&cw->lock);
    pthread_join(cw->thread, NULL);
    pthread_cond_destroy(&cw->cond);
    pthread_mutex_destroy(&cw->lock);
    free(cw);
    w->cache_writer = NULL;
}

void worker_cache_store_unit(struct worker *w, struct worker_unit *u)
{
    if (!w->tcache || u->cache != 1 || !u->key[0] || !u->pw.vt.rows)
        return;
    struct wc_item *it = calloc(1, sizeof(*it));
    vl3_error err = {0};
    /* a copy of the rows before the projector: the window's own object feeds its prompts */
    int rc = it ? vl3_visual_tokens_copy(&u->pw.vt, 0, &it->vt, &err)
                : vl3_error_set(&err, -ENOMEM, "out of memory");
    if (rc < 0) {
        vl3_log_warning("token cache: window %d of job %s not stored: %s", u->pw.window,
                        u->job->id, vl3_error_text(&err, rc));
        free(it);
        return;
    }
    if (!w->cache_writer) { /* no writer thread: store here */
        tcache_store(w->tcache, u->key, u->key_descr, &it->vt);
        vl3_visual_tokens_deinit(&it->vt);
        free(it);
        return;
    }
    it->job = u->job;
    memcpy(it->key, u->key, sizeof(it->key));
    it->descr = u->key_descr;
    u->key_descr = NULL;
    pthread_mutex_lock(&w->lock);
    u->job->pending++;
    pthread_mutex_unlock(&w->lock);
    struct worker_cache_writer *cw = w->cache_writer;
    pthread_mutex_lock(&cw->lock);
    if (cw->tail)
        cw->tail->next = it;
    else
        cw->head = it;
    cw->tail = it;
    pthread_cond_signal(&cw->cond);
    pthread_mutex_unlock(&cw->lock);
}
