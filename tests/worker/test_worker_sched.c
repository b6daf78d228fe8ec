/* test_worker_sched.c: the continuous-batching scheduler (worker_sched_*) and the memory budget,
 * against a fake language model.
 *
 * The fake keeps each slot's KV cache as a list of position values (the id, and the visual row
 * that replaced its embedding), and samples from a hash of the whole list, so a scheduler that
 * mixed up slots, fed a wrong token, skipped or repeated a chunk, or shared a prefix that is not
 * the sequence's own changes the answers (or trips the fake's checks). Answers of many sequences
 * decoded together -- joining at different times, prompts cut into chunks beside decode tokens,
 * prefixes shared -- must equal each sequence decoded alone. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "worker_budget.h"
#include "worker_lm.h"

#define FAKE_SLOTS_MAX 16
#define FAKE_LEN 256
#define FAKE_STOP 0

struct fake {
    uint64_t kv[FAKE_SLOTS_MAX][FAKE_LEN]; /* per position: hash of the id and its visual row */
    int len[FAKE_SLOTS_MAX];
    int32_t last[FAKE_SLOTS_MAX];
    int awaiting[FAKE_SLOTS_MAX]; /* sampled last[] and not fed yet */
    int live[FAKE_SLOTS_MAX];
    int bad_feed;       /* a run that is not the slot's continuation */
    int bad_share;      /* a shared prefix that is not the sequence's own */
    int shares;
    int joins_while_busy; /* begins while another slot was live */
    int max_n;          /* most runs in a batch */
    int max_tokens;     /* most tokens in a batch */
    int mixed;          /* batches with a prompt chunk beside decode tokens */
    long computed;      /* positions computed (prompt chunks and decode tokens) */
    int fail_step_at;   /* batch number that fails (0 = never) */
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

/* The value of a position: its id, and its visual row if it has one. */
static uint64_t pos_value(int32_t id, const float *row, int dim)
{
    uint64_t h = mix(7, (uint64_t)id);
    for (int i = 0; row && i < dim; i++)
        h = mix(h, (uint64_t)(int64_t)(row[i] * 1000));
    return h;
}

/* The value of prompt position p of q. */
static uint64_t seq_value(const struct worker_seq *q, int p)
{
    const float *row = NULL;
    for (int i = 0; i < q->n_visual; i++)
        if (q->visual_pos[i] == p)
            row = q->visual + (size_t)i * (size_t)q->visual_dim;
    return pos_value(q->ids[p], row, q->visual_dim);
}

static int fake_begin(void *impl, int slot, const struct worker_seq *q, int src, int share_len,
                      vl3_error *err)
{
    struct fake *f = impl;
    (void)err;
    for (int i = 0; i < FAKE_SLOTS_MAX; i++)
        if (i != slot && f->live[i])
            f->joins_while_busy++;
    f->len[slot] = 0;
    f->awaiting[slot] = 0;
    if (src >= 0) {
        f->shares++;
        if (share_len > f->len[src] || share_len >= q->n_ids)
            f->bad_share++;
        for (int p = 0; p < share_len && p < f->len[src]; p++) {
            if (f->kv[src][p] != seq_value(q, p))
                f->bad_share++;
            f->kv[slot][p] = f->kv[src][p];
        }
        f->len[slot] = share_len;
    }
    f->live[slot] = 1;
    return 0;
}

static int fake_batch(void *impl, const struct worker_lm_run *runs, int n, int32_t *ret_ids,
                      vl3_error *err)
{
    struct fake *f = impl;
    f->steps++;
    if (f->fail_step_at && f->steps == f->fail_step_at)
        return vl3_error_set(err, f->fail_code, "injected failure");
    if (n > f->max_n)
        f->max_n = n;
    int tokens = 0, decodes = 0, chunks = 0;
    for (int k = 0; k < n; k++) {
        const struct worker_lm_run *r = &runs[k];
        int s = r->slot;
        tokens += r->n;
        if (!f->live[s] || r->pos0 != f->len[s] || f->len[s] + r->n > FAKE_LEN)
            f->bad_feed++;
        if (f->awaiting[s]) {
            decodes++;
            if (r->n != 1 || r->ids[0] != f->last[s])
                f->bad_feed++;
        } else {
            chunks++;
        }
        f->awaiting[s] = 0;
        for (int i = 0; i < r->n && f->len[s] < FAKE_LEN; i++) {
            const float *row = NULL;
            for (int v = 0; v < r->n_visual; v++)
                if (r->visual_pos[v] == r->pos0 + i)
                    row = r->visual + (size_t)v * (size_t)r->visual_dim;
            f->kv[s][f->len[s]++] = pos_value(r->ids[i], row, r->visual_dim);
        }
        f->computed += r->n;
        if (r->sample) {
            uint64_t h = 1;
            for (int p = 0; p < f->len[s]; p++)
                h = mix(h, f->kv[s][p]);
            ret_ids[k] = f->last[s] = pick(h);
            f->awaiting[s] = 1;
        }
    }
    if (tokens > f->max_tokens)
        f->max_tokens = tokens;
    f->mixed += decodes > 0 && chunks > 0;
    return 0;
}

static void fake_free(void *impl)
{
    (void)impl;
}

static const struct worker_lm_ops fake_ops = {fake_begin, fake_batch, fake_free};

/* A worker_lm over a fake: slots, tokens per slot (0 = unbounded), tokens per batch (0 =
 * unbounded), one stop id (-1 = none). */
static struct worker_lm fake_lm(struct fake *f, int slots, int n_ctx, int n_batch, int32_t stop)
{
    struct worker_lm lm = {.ops = &fake_ops, .impl = f, .n_slots = slots, .n_ctx = n_ctx,
                           .n_batch = n_batch, .n_stop = 1};
    lm.stop_ids[0] = stop;
    return lm;
}

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

/* run the first nseq sequences on slots slots, n_batch tokens a batch; the last `late` of them
 * are submitted only after `delay` steps; *ret_stats (may be NULL): the scheduler's */
static int run_some(struct run *r, struct fake *f, int slots, int n_batch, int nseq, int late,
                    int delay, struct worker_sched_stats *ret_stats)
{
    struct worker_lm lm = fake_lm(f, slots, 0, n_batch, FAKE_STOP);
    struct worker_sched *s = NULL;
    ASSERT_OK(worker_sched_new(&lm, on_done, r, &s));
    for (int i = 0; i < nseq - late; i++)
        ASSERT_OK(worker_sched_submit(s, &r->seq[i]));
    int steps = 0, pend;
    while ((pend = worker_sched_step(s)) > 0 || steps < delay) {
        ASSERT(pend >= 0);
        if (++steps == delay)
            for (int i = nseq - late; i < nseq; i++)
                ASSERT_OK(worker_sched_submit(s, &r->seq[i]));
        ASSERT(steps < 10000);
    }
    if (ret_stats)
        worker_sched_get_stats(s, ret_stats);
    worker_sched_free(s);
    return 0;
}

static int run_all(struct run *r, struct fake *f, int slots, int late, int delay)
{
    return run_some(r, f, slots, 0, NSEQ, late, delay, NULL);
}

/* the outcomes of the first n sequences of a and b are equal, and every one succeeded */
static int same_answers(const struct run *a, const struct run *b, int n)
{
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(a->done[i], 1);
        ASSERT_EQ(b->done[i], 1);
        ASSERT_EQ(a->rc[i], 0);
        ASSERT_EQ(b->rc[i], 0);
        ASSERT_EQ(b->n_out[i], a->n_out[i]);
        ASSERT_MEM_EQ(b->out[i], a->out[i], sizeof(int32_t) * (size_t)a->n_out[i]);
        ASSERT_EQ(b->eos[i], a->eos[i]);
    }
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
    struct worker_lm lm = fake_lm(&f, 4, 0, 0, -1);
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
    struct worker_lm lm = fake_lm(&f, 2, 9, 0, -1); /* no stop id; 9 tokens per slot */
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
    struct worker_lm lm = fake_lm(&f, 3, 0, 0, -1);
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

/* Long prompts are cut into chunks of the room a batch leaves beside the running decodes: no
 * batch exceeds n_batch tokens, chunks and decode tokens share batches, and the answers are
 * those of each sequence alone. */
#define LONGP 40
struct long_run {
    struct run r;
    int32_t prompt[NSEQ][LONGP];
    float vis[NSEQ][3][4];
    int64_t vpos[NSEQ][3];
};

static void setup_long(struct long_run *l, int shared)
{
    setup(&l->r);
    for (int i = 0; i < NSEQ; i++) {
        /* shared: every prompt starts with the same 24 ids and visual rows (one window asked
         * several questions) */
        for (int k = 0; k < LONGP; k++)
            l->prompt[i][k] = shared && k < 24 ? 500 + k : 100 + i * 41 + k;
        for (int v = 0; v < 3; v++) {
            l->vpos[i][v] = 3 + 7 * v; /* 3, 10, 17: inside the shared part */
            for (int c = 0; c < 4; c++)
                l->vis[i][v][c] = shared ? (float)(v * 4 + c) : (float)(i + v * 0.5 + c);
        }
        struct worker_seq *q = &l->r.seq[i];
        q->ids = l->prompt[i];
        q->n_ids = LONGP - i % 3; /* 40, 39, 38 */
        q->visual = &l->vis[i][0][0];
        q->visual_pos = l->vpos[i];
        q->n_visual = 3;
        q->visual_dim = 4;
    }
}

TEST(sched_chunked_prefill_beside_decodes)
{
    static struct long_run alone, chunked;
    struct fake fa = {0}, fc = {0};
    setup_long(&alone, 0);
    setup_long(&chunked, 0);
    ASSERT_EQ(run_some(&alone.r, &fa, 1, 0, 6, 0, 0, NULL), 0);
    struct worker_sched_stats st;
    ASSERT_EQ(run_some(&chunked.r, &fc, 3, 8, 6, 3, 4, &st), 0);
    ASSERT_EQ(fa.bad_feed, 0);
    ASSERT_EQ(fc.bad_feed, 0);
    ASSERT_LE(fc.max_tokens, 8);     /* the budget held */
    ASSERT_GT(fc.mixed, 0);          /* prompt chunks rode beside decode tokens */
    ASSERT_GT(st.mixed_steps, 0);
    ASSERT_EQ(fc.shares, 0);         /* nothing in common: nothing shared */
    ASSERT_EQ(fc.computed, fa.computed);
    ASSERT_EQ(same_answers(&alone.r, &chunked.r, 6), 0);
    return 0;
}

/* Prompts that start with the same ids and visual rows share the prefix's KV: the followers
 * wait for the first to prefill it (in chunks), share it, compute only their suffixes, and
 * answer as alone. A prompt with the same ids but other visual rows shares only the part
 * before its first different row (here: too short to share). Run twice: the source answering
 * at length (followers join while it decodes) and with one token (it finishes at the end of its
 * prefill, and its followers take the prefix as it goes). */
TEST(sched_shared_prefix)
{
    for (int variant = 0; variant < 2; variant++) {
        static struct long_run alone, shared;
        struct fake fa = {0}, fs = {0};
        setup_long(&alone, 1);
        setup_long(&shared, 1);
        for (int k = 0; k < 4; k++) /* sequence 4: its first visual row differs */
            alone.vis[4][0][k] = shared.vis[4][0][k] = 99.0f + k;
        alone.r.seq[0].max_new_tokens = shared.r.seq[0].max_new_tokens = variant ? 1 : 30;
        ASSERT_EQ(run_some(&alone.r, &fa, 1, 0, 5, 0, 0, NULL), 0);
        struct worker_sched_stats st;
        ASSERT_EQ(run_some(&shared.r, &fs, 5, 8, 5, 0, 0, &st), 0);
        ASSERT_EQ(fs.bad_feed, 0);
        ASSERT_EQ(fs.bad_share, 0);
        ASSERT_EQ(fa.shares, 0);
        ASSERT_EQ(fs.shares, 3); /* 1, 2, 3 from 0; 4 alone */
        ASSERT_EQ(st.shared_tokens, 3 * 24);
        ASSERT_EQ(fs.computed, fa.computed - 3 * 24);
        ASSERT_EQ(shared.r.seq[0].shared_tokens, 0);
        ASSERT_EQ(shared.r.seq[2].shared_tokens, 24);
        ASSERT_EQ(shared.r.seq[4].shared_tokens, 0);
        ASSERT_LE(fs.max_tokens, 8);
        ASSERT_EQ(same_answers(&alone.r, &shared.r, 5), 0);
    }
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
    struct worker_lm lm = fake_lm(&f, 4, 0, 0, -1);
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
