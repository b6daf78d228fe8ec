/* test_worker_sched.c: the continuous-batching scheduler (worker_sched_*) and the memory budget,
 * against a fake language model.
 *
 * The fake keeps a running hash per slot: start() hashes the prompt ids and visual rows, step()
 * folds in the id it was fed and checks that it is the id it sampled last for that slot, so a
 * scheduler that mixed up slots, fed a wrong token or skipped a step changes the answers (or
 * trips the check). Answers of many sequences decoded together, joining at different times,
 * must equal each sequence decoded alone. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "worker_budget.h"
#include "worker_lm.h"

#define FAKE_SLOTS_MAX 16
#define FAKE_STOP 0

struct fake {
    uint64_t h[FAKE_SLOTS_MAX];
    int32_t last[FAKE_SLOTS_MAX];
    int live[FAKE_SLOTS_MAX];
    int bad_feed;       /* a step fed a slot something else than its last sample */
    int joins_while_busy; /* starts while another slot was live */
    int max_n;
    int fail_step_at;   /* step number that fails (0 = never) */
    int fail_code;
    int steps;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static int32_t pick(uint64_t h)
{
    return (int32_t)((h >> 17) % 23); /* 0 (stop) about one time in 23 */
}

static int fake_start(void *impl, int slot, const struct worker_seq *q, int32_t *ret_id,
                      vl3_error *err)
{
    struct fake *f = impl;
    (void)err;
    for (int i = 0; i < FAKE_SLOTS_MAX; i++)
        if (i != slot && f->live[i])
            f->joins_while_busy++;
    uint64_t h = 1;
    for (int i = 0; i < q->n_ids; i++)
        h = mix(h, (uint64_t)q->ids[i]);
    for (int i = 0; i < q->n_visual * q->visual_dim; i++)
        h = mix(h, (uint64_t)(int64_t)(q->visual[i] * 1000));
    f->h[slot] = h;
    f->live[slot] = 1;
    *ret_id = f->last[slot] = pick(h);
    return 0;
}

static int fake_step(void *impl, const int *slots, const int32_t *ids, int n, int32_t *ret_ids,
                     vl3_error *err)
{
    struct fake *f = impl;
    f->steps++;
    if (f->fail_step_at && f->steps == f->fail_step_at)
        return vl3_error_set(err, f->fail_code, "injected failure");
    if (n > f->max_n)
        f->max_n = n;
    for (int i = 0; i < n; i++) {
        int s = slots[i];
        if (!f->live[s] || ids[i] != f->last[s])
            f->bad_feed++;
        f->h[s] = mix(f->h[s], (uint64_t)ids[i]);
        ret_ids[i] = f->last[s] = pick(f->h[s]);
    }
    return 0;
}

static void fake_free(void *impl)
{
    (void)impl;
}

static const struct worker_lm_ops fake_ops = {fake_start, fake_step, fake_free};

#define NSEQ 12

struct run {
    struct worker_seq seq[NSEQ];
    int32_t prompt[NSEQ][6];
    float vis[NSEQ][4];
    int64_t vpos[NSEQ][1];
    int32_t out[NSEQ][64];
    int n_out[NSEQ], eos[NSEQ], rc[NSEQ], done[NSEQ], max_batch[NSEQ];
    int order[NSEQ], n_done;
};

static void on_done(void *user, struct worker_seq *q)
{
    struct run *r = user;
    int i = (int)(q - r->seq);
    r->done[i]++;
    r->rc[i] = q->rc;
    r->n_out[i] = q->n_out;
    r->eos[i] = q->stopped_by_eos;
    r->max_batch[i] = q->max_batch;
    if (q->n_out > 0)
        memcpy(r->out[i], q->out, sizeof(int32_t) * (size_t)q->n_out);
    r->order[r->n_done++] = i;
}

static void setup(struct run *r)
{
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < NSEQ; i++) {
        for (int k = 0; k < 6; k++)
            r->prompt[i][k] = 100 + i * 7 + k;
        for (int k = 0; k < 4; k++)
            r->vis[i][k] = (float)(i * 0.25 + k);
        r->vpos[i][0] = 2;
        struct worker_seq *q = &r->seq[i];
        q->ids = r->prompt[i];
        q->n_ids = 6;
        q->visual = r->vis[i];
        q->visual_pos = r->vpos[i];
        q->n_visual = 1;
        q->visual_dim = 4;
        q->max_new_tokens = 10 + (i * 13) % 50;
    }
}

/* run every sequence; `late` sequences are submitted only after `delay` steps */
static int run_all(struct run *r, struct fake *f, int slots, int late, int delay)
{
    struct worker_lm lm = {&fake_ops, f, slots, 0, {FAKE_STOP}, 1};
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, r, &s));
    for (int i = 0; i < NSEQ - late; i++)
        ASSERT_OK(worker_sched_submit(s, &r->seq[i]));
    int steps = 0, pend;
    while ((pend = worker_sched_step(s)) > 0 || steps < delay) {
        ASSERT(pend >= 0);
        if (++steps == delay)
            for (int i = NSEQ - late; i < NSEQ; i++)
                ASSERT_OK(worker_sched_submit(s, &r->seq[i]));
        ASSERT(steps < 10000);
    }
    worker_sched_free(s);
    return 0;
}

TEST(sched_batched_equals_alone)
{
    static struct run alone, batched;
    struct fake fa = {0}, fb = {0};
    setup(&alone);
    setup(&batched);
    ASSERT_EQ(run_all(&alone, &fa, 1, 0, 0), 0);
    ASSERT_EQ(run_all(&batched, &fb, 4, 5, 3), 0);
    ASSERT_EQ(fa.bad_feed, 0);
    ASSERT_EQ(fb.bad_feed, 0);
    ASSERT_EQ(fa.max_n, 1);
    ASSERT_EQ(fb.max_n, 4);          /* decode steps really were batched */
    ASSERT_GT(fb.joins_while_busy, 0); /* prompts joined while others decoded */
    int some_eos = 0, some_len = 0;
    for (int i = 0; i < NSEQ; i++) {
        ASSERT_EQ(alone.done[i], 1);
        ASSERT_EQ(batched.done[i], 1);
        ASSERT_EQ(alone.rc[i], 0);
        ASSERT_EQ(batched.rc[i], 0);
        ASSERT_EQ(batched.n_out[i], alone.n_out[i]);
        ASSERT_MEM_EQ(batched.out[i], alone.out[i], sizeof(int32_t) * (size_t)alone.n_out[i]);
        ASSERT_EQ(batched.eos[i], alone.eos[i]);
        /* stop rules: the stop id never appears; otherwise the length limit was reached */
        for (int k = 0; k < alone.n_out[i]; k++)
            ASSERT_NE(alone.out[i][k], FAKE_STOP);
        if (!alone.eos[i])
            ASSERT_EQ(alone.n_out[i], alone.seq[i].max_new_tokens);
        some_eos |= alone.eos[i];
        some_len |= !alone.eos[i];
    }
    ASSERT(some_eos && some_len); /* both stop rules were exercised */
    return 0;
}

/* Sequences tagged with their job (group): each learns the most distinct jobs one of its
 * decode steps held (two jobs of two sequences each, decoded together: 2, not 4). */
TEST(sched_groups_counted)
{
    static struct run r;
    struct fake f = {0};
    setup(&r);
    int job_a, job_b;
    struct worker_lm lm = {&fake_ops, &f, 4, 0, {-1}, 1};
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, &r, &s));
    for (int i = 0; i < 4; i++) {
        r.seq[i].group = i < 2 ? (const void *)&job_a : (const void *)&job_b;
        ASSERT_OK(worker_sched_submit(s, &r.seq[i]));
    }
    while (worker_sched_step(s) > 0)
        ;
    worker_sched_free(s);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(r.done[i], 1);
        ASSERT_EQ(r.seq[i].max_groups, 2);
        ASSERT_EQ(r.seq[i].max_batch, 4);
    }
    return 0;
}

TEST(sched_n_ctx_limit)
{
    static struct run r;
    struct fake f = {0};
    setup(&r);
    struct worker_lm lm = {&fake_ops, &f, 2, 9, {-1}, 1}; /* no stop id; 9 tokens per slot */
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, &r, &s));
    ASSERT_OK(worker_sched_submit(s, &r.seq[0]));
    while (worker_sched_step(s) > 0)
        ;
    worker_sched_free(s);
    ASSERT_EQ(r.done[0], 1);
    ASSERT_EQ(r.n_out[0], 3); /* 6 prompt + 3 generated = n_ctx */
    return 0;
}

TEST(sched_step_failure)
{
    static struct run r;
    struct fake f = {0};
    setup(&r);
    f.fail_step_at = 3;
    f.fail_code = -ENOMEM;
    struct worker_lm lm = {&fake_ops, &f, 3, 0, {-1}, 1};
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, &r, &s));
    for (int i = 0; i < 5; i++)
        ASSERT_OK(worker_sched_submit(s, &r.seq[i]));
    int rc;
    while ((rc = worker_sched_step(s)) > 0)
        ;
    ASSERT_EQ(rc, 0);
    /* the three in the failing step failed; the two waiting ones ran to the end */
    int failed = 0;
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(r.done[i], 1);
        failed += r.rc[i] == -ENOMEM;
        if (r.rc[i] == 0)
            ASSERT_EQ(r.n_out[i], r.seq[i].max_new_tokens);
    }
    ASSERT_EQ(failed, 3);
    /* a sticky device error fails everything, waiting ones included */
    setup(&r);
    struct fake g = {0};
    g.fail_step_at = 2;
    g.fail_code = VL3_E_CUDA_FATAL;
    lm.impl = &g;
    lm.n_slots = 2;
    worker_sched_free(s);
    ASSERT_OK(worker_sched_new(&lm, on_done, &r, &s));
    for (int i = 0; i < 5; i++)
        ASSERT_OK(worker_sched_submit(s, &r.seq[i]));
    while ((rc = worker_sched_step(s)) > 0)
        ;
    ASSERT_EQ(rc, VL3_E_CUDA_FATAL);
    ASSERT_EQ(worker_sched_pending(s), 0);
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(r.done[i], 1);
        ASSERT_EQ(r.rc[i], VL3_E_CUDA_FATAL);
    }
    worker_sched_free(s);
    return 0;
}

struct waiter {
    struct worker_budget *b;
    int rc;
    int done;
};

static void *wait_reserve(void *arg)
{
    struct waiter *x = arg;
    x->rc = worker_budget_reserve(x->b, 600, NULL);
    __atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

TEST(budget_waits_and_refuses)
{
    struct worker_budget b;
    ASSERT_OK(worker_budget_init(&b, 1000));
    vl3_error err = {0};
    ASSERT_EQ(worker_budget_reserve(&b, 1001, &err), VL3_E_LIMIT);
    ASSERT_STR_CONTAINS(err.msg, "memory_budget");
    ASSERT_OK(worker_budget_reserve(&b, 700, NULL));
    struct waiter x = {&b, 1, 0};
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, wait_reserve, &x), 0);
    usleep(50000);
    ASSERT_EQ(__atomic_load_n(&x.done, __ATOMIC_SEQ_CST), 0); /* 700 + 600 > 1000: waits */
    worker_budget_release(&b, 700);
    pthread_join(t, NULL);
    ASSERT_EQ(x.rc, 0);
    ASSERT_EQ(worker_budget_used(&b), 600);
    /* closing wakes a waiter with -ECANCELED */
    x.done = 0;
    ASSERT_EQ(pthread_create(&t, NULL, wait_reserve, &x), 0);
    usleep(20000);
    worker_budget_close(&b);
    pthread_join(t, NULL);
    ASSERT_EQ(x.rc, -ECANCELED);
    worker_budget_deinit(&b);
    return 0;
}

struct room_waiter {
    struct worker_budget *b;
    _Atomic int64_t queued;
    int rc, done;
};

static void *wait_room(void *arg)
{
    struct room_waiter *x = arg;
    x->rc = worker_budget_wait_room(x->b, &x->queued);
    __atomic_store_n(&x->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* The decode thread's wait before preparing another window: it waits while the budget is full
 * and some of its windows are queued, and goes on once they are consumed (released). */
TEST(budget_wait_room_until_consumed)
{
    struct worker_budget b;
    ASSERT_OK(worker_budget_init(&b, 1000));
    static struct room_waiter x;
    x.b = &b;
    x.queued = 0;
    worker_budget_charge(&b, 1200); /* full, but nothing of ours queued: no wait (no deadlock) */
    ASSERT_OK(worker_budget_wait_room(&b, &x.queued));
    x.queued = 300; /* 300 of the 1200 are our queued window */
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, wait_room, &x), 0);
    usleep(50000);
    ASSERT_EQ(__atomic_load_n(&x.done, __ATOMIC_SEQ_CST), 0); /* full and ours queued: waits */
    x.queued -= 300; /* the engine consumed it (worker_unit_free order) */
    worker_budget_release(&b, 300);
    pthread_join(t, NULL);
    ASSERT_EQ(x.rc, 0);
    ASSERT_EQ(worker_budget_peak(&b), 1200);
    worker_budget_deinit(&b);
    return 0;
}

static int alive_even(void *user, const struct worker_seq *q)
{
    struct run *r = user;
    return (int)(q - r->seq) % 2 == 0; /* odd ones are cancelled */
}

TEST(sched_cancel_dead_sequences)
{
    static struct run r;
    struct fake f = {0};
    setup(&r);
    struct worker_lm lm = {&fake_ops, &f, 4, 0, {-1}, 1};
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, &r, &s));
    worker_sched_set_alive(s, alive_even);
    for (int i = 0; i < 6; i++)
        ASSERT_OK(worker_sched_submit(s, &r.seq[i]));
    while (worker_sched_step(s) > 0)
        ;
    worker_sched_free(s);
    ASSERT_EQ(f.bad_feed, 0);
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ(r.done[i], 1);
        if (i % 2) {
            ASSERT_EQ(r.rc[i], -ECANCELED);
            ASSERT_LE(r.n_out[i], 1); /* only the token sampled at prefill */
        } else {
            ASSERT_EQ(r.rc[i], 0);
            ASSERT_EQ(r.n_out[i], r.seq[i].max_new_tokens);
        }
    }
    return 0;
}
