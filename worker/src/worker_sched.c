/* worker_sched.c: continuous batching with chunked prefill and shared prompt prefixes over a
 * worker_lm (see worker_lm.h).
 *
 * State: a FIFO of waiting sequences and one pointer per slot. A step
 *   1. admits waiting sequences into free slots: each looks among the slots' sequences for the
 *      longest prefix of its prompt with the same ids and the same visual rows; a long enough one
 *      is shared (begin() with the other slot as source) once the other has prefilled it -- until
 *      then the sequence waits in its slot, a "follower";
 *   2. builds one batch: the last token of every decoding sequence, then prompt chunks of the
 *      prefilling ones, oldest first, in the room left under lm->n_batch tokens;
 *   3. runs it, and takes the sampled tokens of the decode runs and of the last prompt chunks.
 * A follower whose source finishes first takes what the source prefilled, or starts alone. The
 * per-step arrays are allocated once with the scheduler; a sequence's output buffer is allocated
 * when it is submitted, so steps allocate nothing. */
#include "worker_lm.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/util.h"

/* Shorter common prefixes are prefilled again: not worth a follower's wait. */
#define SHARE_MIN_TOKENS 16

struct worker_sched {
    struct worker_lm *lm;
    worker_seq_done_cb done;
    worker_seq_alive_cb alive;
    void *user;
    struct worker_seq *head, *tail; /* waiting */
    struct worker_seq **slot;       /* [n_slots] active or NULL */
    int n_waiting, n_active;
    struct worker_lm_run *b_runs;
    int32_t *b_out;
    struct worker_seq **b_seq;
    struct worker_sched_stats st;
};

int worker_sched_new(struct worker_lm *lm, worker_seq_done_cb done, void *user,
                     struct worker_sched **ret)
{
    if (!lm || lm->n_slots <= 0 || !done || lm->n_batch < 0 ||
        (lm->n_batch > 0 && lm->n_batch < lm->n_slots))
        return -EINVAL;
    struct worker_sched *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->lm = lm;
    s->done = done;
    s->user = user;
    size_t n = (size_t)lm->n_slots;
    s->slot = calloc(n, sizeof(*s->slot));
    s->b_runs = calloc(n, sizeof(*s->b_runs));
    s->b_out = calloc(n, sizeof(int32_t));
    s->b_seq = calloc(n, sizeof(*s->b_seq));
    if (!s->slot || !s->b_runs || !s->b_out || !s->b_seq) {
        worker_sched_free(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

void worker_sched_free(struct worker_sched *s)
{
    if (!s)
        return;
    free(s->slot);
    free(s->b_runs);
    free(s->b_out);
    free(s->b_seq);
    free(s);
}

void worker_sched_set_alive(struct worker_sched *s, worker_seq_alive_cb alive)
{
    s->alive = alive;
}

int worker_sched_submit(struct worker_sched *s, struct worker_seq *q)
{
    if (!q || q->max_new_tokens <= 0 || q->n_ids <= 0 || !q->ids ||
        (q->n_visual > 0 && (!q->visual || !q->visual_pos || q->visual_dim <= 0)))
        return -EINVAL;
    q->out = malloc(sizeof(int32_t) * (size_t)q->max_new_tokens);
    if (!q->out)
        return -ENOMEM;
    q->n_out = 0;
    q->rc = 0;
    q->stopped_by_eos = 0;
    q->max_batch = 0;
    q->max_groups = 0;
    q->shared_tokens = 0;
    q->prefill_ms = 0;
    q->t_start_ns = vl3_time_ns(); /* reset when it starts; covers failing while waiting */
    q->slot = -1;
    q->n_done = 0;
    q->begun = 0;
    q->share_from = NULL;
    q->share_len = 0;
    q->next = NULL;
    if (s->tail)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    s->n_waiting++;
    return 0;
}

int worker_sched_pending(const struct worker_sched *s)
{
    return s->n_waiting + s->n_active;
}

void worker_sched_get_stats(const struct worker_sched *s, struct worker_sched_stats *ret)
{
    *ret = s->st;
}

static void begin_seq(struct worker_sched *s, struct worker_seq *q, struct worker_seq *src,
                      int len);

static void finish(struct worker_sched *s, struct worker_seq *q)
{
    if (q->slot >= 0) {
        s->slot[q->slot] = NULL;
        s->n_active--;
        /* followers of q take what q prefilled now, while its slot still holds it */
        for (int i = 0; i < s->lm->n_slots; i++) {
            struct worker_seq *f = s->slot[i];
            if (f && f->share_from == q)
                begin_seq(s, f, q->begun && q->n_done >= f->share_len ? q : NULL, f->share_len);
        }
    }
    q->generate_ms = (double)(vl3_time_ns() - q->t_start_ns) / 1e6 - q->prefill_ms;
    int32_t *out = q->out; /* the callback may free the memory q lives in */
    s->done(s->user, q);
    free(out);
}

/* begin() q in its slot, alone (src NULL) or sharing src's first len tokens; a failure
 * finishes q. */
static void begin_seq(struct worker_sched *s, struct worker_seq *q, struct worker_seq *src,
                      int len)
{
    q->share_from = NULL;
    q->share_len = 0;
    int rc = s->lm->ops->begin(s->lm->impl, q->slot, q, src ? src->slot : -1, src ? len : 0,
                               &q->err);
    if (rc < 0) {
        q->rc = rc;
        finish(s, q);
        return;
    }
    q->begun = 1;
    q->n_done = src ? len : 0;
    q->shared_tokens = src ? len : 0;
    s->st.shared_tokens += q->shared_tokens;
}

static int is_stop(const struct worker_lm *lm, int32_t id)
{
    for (int i = 0; i < lm->n_stop; i++)
        if (lm->stop_ids[i] == id)
            return 1;
    return 0;
}

/* Record a sampled token; returns 1 when the sequence is finished. */
static int take_token(struct worker_sched *s, struct worker_seq *q, int32_t id)
{
    s->st.tokens++;
    if (is_stop(s->lm, id)) {
        q->stopped_by_eos = 1;
        return 1;
    }
    q->out[q->n_out++] = id;
    q->last = id;
    if (q->n_out >= q->max_new_tokens)
        return 1;
    /* the next step would write position n_ids + n_out - 1; stop when the slot is full */
    if (s->lm->n_ctx > 0 && q->n_ids + q->n_out >= s->lm->n_ctx)
        return 1;
    return 0;
}

/* Tokens at the start of q's prompt that p's prompt holds too, with the same visual rows; at
 * most q->n_ids - 1 (q computes at least its last prompt token itself, for its logits). */
static int common_prefix(const struct worker_seq *p, const struct worker_seq *q)
{
    int n = p->n_ids < q->n_ids - 1 ? p->n_ids : q->n_ids - 1, len = 0;
    while (len < n && p->ids[len] == q->ids[len])
        len++;
    int i = 0, j = 0;
    for (; i < p->n_visual && p->visual_pos[i] < len; i++, j++) {
        if (j >= q->n_visual || q->visual_pos[j] != p->visual_pos[i] ||
            q->visual_dim != p->visual_dim)
            return (int)p->visual_pos[i];
        size_t w = (size_t)p->visual_dim;
        const float *a = p->visual + (size_t)i * w, *b = q->visual + (size_t)j * w;
        if (a != b && memcmp(a, b, w * sizeof(float)) != 0)
            return (int)p->visual_pos[i];
    }
    if (j < q->n_visual && q->visual_pos[j] < len)
        return (int)q->visual_pos[j];
    return len;
}

static int admit(struct worker_sched *s)
{
    for (int i = 0; i < s->lm->n_slots && s->head; i++) {
        if (s->slot[i])
            continue;
        struct worker_seq *q = s->head;
        s->head = q->next;
        if (!s->head)
            s->tail = NULL;
        s->n_waiting--;
        q->next = NULL;
        q->slot = i;
        s->slot[i] = q;
        s->n_active++;
        q->t_start_ns = vl3_time_ns();
        s->st.prefills++;
        s->st.prompt_tokens += q->n_ids;
        if (s->lm->n_ctx > 0 && q->n_ids > s->lm->n_ctx) {
            q->rc = vl3_error_set(&q->err, VL3_E_LIMIT, "prompt of %d tokens does not fit the "
                                  "context of %d", q->n_ids, s->lm->n_ctx);
            finish(s, q);
            continue;
        }
        struct worker_seq *best = NULL;
        int best_len = 0;
        for (int k = 0; k < s->lm->n_slots; k++) {
            struct worker_seq *p = s->slot[k];
            if (!p || p == q || !p->begun)
                continue;
            int len = common_prefix(p, q);
            if (len > best_len)
                best = p, best_len = len;
        }
        if (best && best_len >= SHARE_MIN_TOKENS) {
            if (best->n_done >= best_len) {
                begin_seq(s, q, best, best_len);
            } else {
                q->share_from = best; /* waits until best has prefilled best_len tokens */
                q->share_len = best_len;
            }
        } else {
            begin_seq(s, q, NULL, 0);
        }
    }
    return 0;
}

static void fail_all(struct worker_sched *s, int rc, const vl3_error *err)
{
    for (int i = 0; i < s->lm->n_slots; i++)
        if (s->slot[i]) {
            s->slot[i]->share_from = NULL;
            s->slot[i]->rc = rc;
            s->slot[i]->err = *err;
            finish(s, s->slot[i]);
        }
    while (s->head) {
        struct worker_seq *q = s->head;
        s->head = q->next;
        s->n_waiting--;
        q->rc = rc;
        q->err = *err;
        finish(s, q);
    }
    s->tail = NULL;
}

/* The run for q's next prompt chunk of n tokens. */
static struct worker_lm_run prompt_run(const struct worker_seq *q, int n)
{
    struct worker_lm_run r = {.slot = q->slot, .ids = q->ids + q->n_done, .n = n,
                              .pos0 = q->n_done, .visual_dim = q->visual_dim,
                              .sample = q->n_done + n == q->n_ids};
    int i = 0;
    while (i < q->n_visual && q->visual_pos[i] < q->n_done)
        i++;
    int j = i;
    while (j < q->n_visual && q->visual_pos[j] < q->n_done + n)
        j++;
    if (j > i) {
        r.visual = q->visual + (size_t)i * (size_t)q->visual_dim;
        r.visual_pos = q->visual_pos + i;
        r.n_visual = j - i;
    }
    return r;
}

int worker_sched_step(struct worker_sched *s)
{
    vl3_error err = {0};
    /* followers whose source has prefilled their shared part */
    for (int i = 0; i < s->lm->n_slots; i++) {
        struct worker_seq *f = s->slot[i];
        if (f && f->share_from && f->share_from->n_done >= f->share_len)
            begin_seq(s, f, f->share_from, f->share_len);
    }
    admit(s);
    for (int i = 0; s->alive && i < s->lm->n_slots; i++)
        if (s->slot[i] && !s->alive(s->user, s->slot[i])) {
            s->slot[i]->rc = vl3_error_set(&s->slot[i]->err, -ECANCELED, "answer cancelled");
            finish(s, s->slot[i]);
        }
    /* decode tokens first: a running answer advances every step */
    int n = 0, tokens = 0, n_decode = 0;
    for (int i = 0; i < s->lm->n_slots; i++) {
        struct worker_seq *q = s->slot[i];
        if (q && q->begun && q->n_done == q->n_ids) {
            s->b_runs[n] = (struct worker_lm_run){.slot = i, .ids = &q->last, .n = 1,
                                                  .pos0 = q->n_ids + q->n_out - 1, .sample = 1};
            s->b_seq[n++] = q;
            tokens++;
        }
    }
    n_decode = n;
    /* then prompt chunks, the sequences admitted first first, in the room left */
    int budget = s->lm->n_batch > 0 ? s->lm->n_batch - tokens : INT_MAX;
    while (budget > 0) {
        struct worker_seq *next = NULL;
        for (int i = 0; i < s->lm->n_slots; i++) {
            struct worker_seq *q = s->slot[i];
            int queued = 0;
            for (int k = n_decode; k < n && !queued; k++)
                queued = s->b_seq[k] == q;
            if (q && q->begun && q->n_done < q->n_ids && !queued &&
                (!next || q->t_start_ns < next->t_start_ns))
                next = q;
        }
        if (!next)
            break;
        int m = next->n_ids - next->n_done < budget ? next->n_ids - next->n_done : budget;
        s->b_runs[n] = prompt_run(next, m);
        s->b_seq[n++] = next;
        budget -= m;
    }
    if (n == 0)
        return worker_sched_pending(s);
    int rc = s->lm->ops->batch(s->lm->impl, s->b_runs, n, s->b_out, &err);
    s->st.steps++;
    s->st.mixed_steps += n_decode > 0 && n > n_decode;
    if (n > s->st.max_batch)
        s->st.max_batch = n;
    if (rc < 0) {
        for (int k = 0; k < n; k++) {
            s->b_seq[k]->rc = rc;
            s->b_seq[k]->err = err;
            finish(s, s->b_seq[k]);
        }
        if (rc == VL3_E_CUDA_FATAL) {
            fail_all(s, rc, &err);
            return rc;
        }
        return worker_sched_pending(s);
    }
    int groups = 0; /* distinct groups (jobs) in this batch: n is small (batch.max_sequences) */
    for (int k = 0; k < n; k++) {
        int seen = 0;
        for (int i = 0; i < k && !seen; i++)
            seen = s->b_seq[i]->group && s->b_seq[i]->group == s->b_seq[k]->group;
        groups += !seen;
    }
    for (int k = 0; k < n; k++) {
        struct worker_seq *q = s->b_seq[k];
        if (n > q->max_batch)
            q->max_batch = n;
        if (groups > q->max_groups)
            q->max_groups = groups;
        if (k >= n_decode) {
            q->n_done += s->b_runs[k].n;
            if (!s->b_runs[k].sample)
                continue;
            q->prefill_ms = (double)(vl3_time_ns() - q->t_start_ns) / 1e6;
        }
        if (take_token(s, q, s->b_out[k]))
            finish(s, q);
    }
    return worker_sched_pending(s);
}
