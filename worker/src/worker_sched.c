/* worker_sched.c: continuous batching over a worker_lm (see worker_lm.h).
 *
 * State: a FIFO of waiting sequences and one pointer per slot. A step admits waiting sequences
 * into free slots (one prefill each, which also yields their first token), retires the ones that
 * are already finished, then feeds every active slot's last token through one batched decode
 * step. The per-step arrays are allocated once with the scheduler; a sequence's output buffer is
 * allocated when it is submitted, so steps allocate nothing. */
#include "worker_lm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/util.h"

struct worker_sched {
    struct worker_lm *lm;
    worker_seq_done_cb done;
    worker_seq_alive_cb alive;
    void *user;
    struct worker_seq *head, *tail; /* waiting */
    struct worker_seq **slot;       /* [n_slots] active or NULL */
    int n_waiting, n_active;
    int *b_slots;
    int32_t *b_ids, *b_out;
    struct worker_seq **b_seq;
    struct worker_sched_stats st;
};

int worker_sched_new(struct worker_lm *lm, worker_seq_done_cb done, void *user,
                     struct worker_sched **ret)
{
    if (!lm || lm->n_slots <= 0 || !done)
        return -EINVAL;
    struct worker_sched *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->lm = lm;
    s->done = done;
    s->user = user;
    size_t n = (size_t)lm->n_slots;
    s->slot = calloc(n, sizeof(*s->slot));
    s->b_slots = calloc(n, sizeof(int));
    s->b_ids = calloc(n, sizeof(int32_t));
    s->b_out = calloc(n, sizeof(int32_t));
    s->b_seq = calloc(n, sizeof(*s->b_seq));
    if (!s->slot || !s->b_slots || !s->b_ids || !s->b_out || !s->b_seq) {
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
    free(s->b_slots);
    free(s->b_ids);
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
    if (!q || q->max_new_tokens <= 0 || q->n_ids <= 0 || !q->ids)
        return -EINVAL;
    q->out = malloc(sizeof(int32_t) * (size_t)q->max_new_tokens);
    if (!q->out)
        return -ENOMEM;
    q->n_out = 0;
    q->rc = 0;
    q->stopped_by_eos = 0;
    q->max_batch = 0;
    q->max_groups = 0;
    q->prefill_ms = 0;
    q->t_start_ns = vl3_time_ns(); /* reset when it starts; covers failing while waiting */
    q->slot = -1;
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

static void finish(struct worker_sched *s, struct worker_seq *q)
{
    if (q->slot >= 0) {
        s->slot[q->slot] = NULL;
        s->n_active--;
    }
    q->generate_ms = (double)(vl3_time_ns() - q->t_start_ns) / 1e6 - q->prefill_ms;
    int32_t *out = q->out; /* the callback may free the memory q lives in */
    s->done(s->user, q);
    free(out);
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
        int32_t id = 0;
        int rc = s->lm->ops->start(s->lm->impl, i, q, &id, &q->err);
        q->prefill_ms = (double)(vl3_time_ns() - q->t_start_ns) / 1e6;
        s->st.prefills++;
        if (rc < 0) {
            q->rc = rc;
            finish(s, q);
            if (rc == VL3_E_CUDA_FATAL)
                return rc;
            continue;
        }
        if (take_token(s, q, id))
            finish(s, q);
    }
    return 0;
}

static void fail_all(struct worker_sched *s, int rc, const vl3_error *err)
{
    for (int i = 0; i < s->lm->n_slots; i++)
        if (s->slot[i]) {
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

int worker_sched_step(struct worker_sched *s)
{
    int rc = admit(s);
    vl3_error err = {0};
    if (rc < 0) {
        vl3_error_set(&err, rc, "device failed during prefill");
        fail_all(s, rc, &err);
        return rc;
    }
    for (int i = 0; s->alive && i < s->lm->n_slots; i++)
        if (s->slot[i] && !s->alive(s->user, s->slot[i])) {
            s->slot[i]->rc = vl3_error_set(&s->slot[i]->err, -ECANCELED, "answer cancelled");
            finish(s, s->slot[i]);
        }
    int n = 0;
    for (int i = 0; i < s->lm->n_slots; i++)
        if (s->slot[i]) {
            s->b_slots[n] = i;
            s->b_ids[n] = s->slot[i]->last;
            s->b_seq[n] = s->slot[i];
            n++;
        }
    if (n == 0)
        return worker_sched_pending(s);
    rc = s->lm->ops->step(s->lm->impl, s->b_slots, s->b_ids, n, s->b_out, &err);
    s->st.steps++;
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
    int groups = 0; /* distinct groups (jobs) in this step: n is small (batch.max_sequences) */
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
        if (take_token(s, q, s->b_out[k]))
            finish(s, q);
    }
    return worker_sched_pending(s);
}
