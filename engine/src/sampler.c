/* sampler.c: next-token selection with HuggingFace transformers semantics (spec §8).
 *
 * Order, as transformers applies its processors and warpers: repetition penalty over the
 * distinct ids of the tracked history (logit / p when positive, logit * p otherwise), then
 * greedy argmax, or temperature (logits / T), top-k (keep every logit >= the k-th largest, ties
 * included), top-p (sort ascending, cumulative softmax, drop entries whose cumulative probability
 * is <= 1 - p, always keep the largest) and a draw from the softmax of what is left.
 * The RNG is xoshiro256** seeded with splitmix64(seed): deterministic per seed on every machine.
 * All scratch (V floats and ids) is allocated by vl3_sampler_new; sampling allocates nothing. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "llm.h"
#include "vl3/engine.h"

struct vl3_sampler {
    vl3_sampler_params p;
    int n_vocab;
    uint64_t rng[4];
    unsigned char *seen; /* [V] 1 when the id is in the history */
    int32_t *hist;       /* [V] distinct ids in first-seen order */
    int n_hist;
    float *work;         /* [V] processed logits */
    int32_t *cand;       /* [V] candidate ids */
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *s)
{
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

vl3_sampler_params vl3_sampler_params_default(void)
{
    return (vl3_sampler_params){.greedy = 0,
                                .temperature = 1.0f,
                                .top_k = 50,
                                .top_p = 1.0f,
                                .repetition_penalty = 1.0f,
                                .seed = 0};
}

void vl3_sampler_free(vl3_sampler *s)
{
    if (!s)
        return;
    free(s->seen);
    free(s->hist);
    free(s->work);
    free(s->cand);
    free(s);
}

void vl3_sampler_reset(vl3_sampler *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_hist; i++)
        s->seen[s->hist[i]] = 0;
    s->n_hist = 0;
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

int vl3_sampler_new(const vl3_sampler_params *params, int n_vocab, vl3_sampler **ret,
                    vl3_error *reterr)
{
    if (!params || !ret || n_vocab < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    const vl3_sampler_params *p = params;
    if (!p->greedy && !(p->temperature > 0.0f))
        return vl3_error_set(reterr, -EINVAL, "temperature must be positive, not %g",
                             (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return vl3_error_set(reterr, -EINVAL, "top_p must be in (0, 1], not %g",
                             (double)p->top_p);
    if (p->top_k < 0)
        return vl3_error_set(reterr, -EINVAL, "top_k must not be negative");
    if (!(p->repetition_penalty > 0.0f))
        return vl3_error_set(reterr, -EINVAL, "repetition_penalty must be positive, not %g",
                             (double)p->repetition_penalty);
    vl3_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->seen = calloc((size_t)n_vocab, 1);
    s->hist = malloc((size_t)n_vocab * sizeof(int32_t));
    s->work = malloc((size_t)n_vocab * sizeof(float));
    s->cand = malloc((size_t)n_vocab * sizeof(int32_t));
    if (!s->seen || !s->hist || !s->work || !s->cand) {
        vl3_sampler_free(s);
        return vl3_error_set(reterr, -ENOMEM, "out of memory");
    }
    vl3_sampler_reset(s);
    *ret = s;
    return 0;
}

int vl3_sampler_accept(vl3_sampler *s, int32_t id)
{
    VL3_RETURN_IF(!s || id < 0 || id >= s->n_vocab, -EINVAL);
    if (!s->seen[id]) {
        s->seen[id] = 1;
        s->hist[s->n_hist++] = id;
    }
    return 0;
}

/* Sift-down for a min-heap of candidate ids keyed by work[] (ties: larger id is "smaller", so the
 * heap keeps the lower ids among equal values, matching a stable descending order). */
static int heap_less(const float *w, int32_t a, int32_t b)
{
    return w[a] < w[b] || (w[a] == w[b] && a > b);
}

static void heap_down(const float *w, int32_t *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(w, h[l], h[m]))
            m = l;
        if (r < n && heap_less(w, h[r], h[m]))
            m = r;
        if (m == i)
            return;
        int32_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Sort ids descending by work[] (ties by ascending id): heap sort on the candidate array, no
 * allocation and no qsort context pointer needed. */
static void sort_desc(const float *w, int32_t *a, int n)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        heap_down(w, a, n, i);
    for (int end = n - 1; end > 0; end--) { /* min-heap: pop the smallest to the back */
        int32_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        heap_down(w, a, end, 0);
    }
}

/* The sampling arithmetic of one row (backend.h): the CPU backend's sample op and, after the
 * sampler has drawn u, vl3_sampler_sample. */
int32_t vl3__sample_ref(const float *x, int V, const struct vl3__sample_row *row,
                        const int32_t *hist, float *work, int32_t *cand)
{
    float *w = work;
    memcpy(w, x, (size_t)V * sizeof(float));
    float rp = row->repetition_penalty;
    if (rp != 1.0f)
        for (int i = 0; i < row->n_hist; i++) {
            float v = w[hist[i]];
            w[hist[i]] = v > 0 ? v / rp : v * rp;
        }
    float temp = row->temperature;
    if (temp != 1.0f)
        for (int i = 0; i < V; i++)
            w[i] /= temp;

    /* candidates, sorted descending */
    int32_t *c = cand;
    int n;
    int k = row->top_k > 0 && row->top_k < V ? row->top_k : 0;
    if (k) {
        for (int i = 0; i < k; i++)
            c[i] = i;
        for (int i = k / 2 - 1; i >= 0; i--)
            heap_down(w, c, k, i);
        for (int i = k; i < V; i++)
            if (heap_less(w, c[0], i)) {
                c[0] = i;
                heap_down(w, c, k, 0);
            }
        float kth = w[c[0]];
        n = k;
        /* HF keeps every logit equal to the k-th value (it removes only those strictly below) */
        for (int i = 0; i < V; i++)
            if (w[i] == kth) {
                int in = 0;
                for (int j = 0; j < k && !in; j++)
                    in = c[j] == i;
                if (!in)
                    c[n++] = i;
            }
        sort_desc(w, c, n);
    } else {
        for (int i = 0; i < V; i++)
            c[i] = i;
        n = V;
        sort_desc(w, c, n);
    }
    /* drop -inf candidates (they have zero probability) but always keep the best */
    while (n > 1 && isinf(w[c[n - 1]]) && w[c[n - 1]] < 0)
        n--;
    double mx = w[c[0]];
    if (row->top_p < 1.0f) {
        /* probabilities in f32 as torch does, cumulative from the smallest upwards */
        double z = 0;
        for (int i = 0; i < n; i++)
            z += exp((double)w[c[i]] - mx);
        float cum = 0.0f, thr = 1.0f - row->top_p;
        int keep = n;
        for (int i = n - 1; i >= 1; i--) {
            cum += (float)(exp((double)w[c[i]] - mx) / z);
            if (cum <= thr)
                keep = i; /* c[i] removed; everything below it too */
            else
                break;
        }
        n = keep;
    }
    double z = 0;
    for (int i = 0; i < n; i++)
        z += exp((double)w[c[i]] - mx);
    double u = row->u * z, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp((double)w[c[i]] - mx);
        if (u < acc)
            return c[i];
    }
    return c[n - 1];
}

/* The row parameters of s for the sample op; draws the uniform (greedy: none, u = 0). */
static void sampler_row(vl3_sampler *s, struct vl3__sample_row *row)
{
    *row = (struct vl3__sample_row){
        .u = 0,
        .temperature = 1.0f,
        .top_p = 1.0f,
        .repetition_penalty = s->p.repetition_penalty,
        .top_k = 1,
        .n_hist = s->p.repetition_penalty != 1.0f ? s->n_hist : 0,
    };
    if (s->p.greedy)
        return;
    row->u = uniform01(s->rng);
    row->temperature = s->p.temperature;
    row->top_p = s->p.top_p;
    row->top_k = s->p.top_k;
}

int vl3_sampler_sample(vl3_sampler *s, const float *logits, int32_t *ret_id, vl3_error *reterr)
{
    if (!s || !logits || !ret_id)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int V = s->n_vocab;
    if (s->p.greedy) {
        float *w = s->work;
        memcpy(w, logits, (size_t)V * sizeof(float));
        float rp = s->p.repetition_penalty;
        if (rp != 1.0f)
            for (int i = 0; i < s->n_hist; i++) {
                float x = w[s->hist[i]];
                w[s->hist[i]] = x > 0 ? x / rp : x * rp;
            }
        int best = 0;
        for (int i = 1; i < V; i++)
            if (w[i] > w[best])
                best = i;
        *ret_id = best;
        return 0;
    }
    struct vl3__sample_row row;
    sampler_row(s, &row);
    *ret_id = vl3__sample_ref(logits, V, &row, s->hist, s->work, s->cand);
    return 0;
}

int vl3_ctx_sample(vl3_ctx *ctx, vl3_sampler *const *samplers, int n, int32_t *ret_ids,
                   vl3_error *reterr)
{
    if (!ctx || !samplers || !ret_ids || n < 1)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments");
    int V = ctx->model->llm.vocab, r;
    if (n > ctx->n_logits)
        return vl3_error_set(reterr, -EINVAL, "%d rows to sample, the last batch left %d logits "
                             "rows", n, ctx->n_logits);
    for (int i = 0; i < n; i++)
        if (samplers[i] && samplers[i]->n_vocab != V)
            return vl3_error_set(reterr, -EINVAL, "sampler %d does not match the vocabulary of "
                                 "%d rows", i, V);
    const vl3__backend_ops *ops = ctx->ops;
    void *b = ctx->bctx;
    if (!ops->sample || !ops->supports(b, VL3__OP_SAMPLE, VL3__DTYPE_F32)) {
        /* on the host, from the downloaded logits */
        if (!ctx->logits_on_host) {
            r = ops->download(b, ctx->logits_host, ctx->logits, (size_t)ctx->n_logits * V * 4);
            if (r < 0)
                return vl3_error_set(reterr, r, "could not download the logits");
            ctx->logits_on_host = 1;
        }
        for (int i = 0; i < n; i++)
            if (samplers[i] && (r = vl3_sampler_sample(samplers[i], ctx->logits_host +
                                                       (size_t)i * V, &ret_ids[i], reterr)) < 0)
                return r;
        return 0;
    }
    /* on the device: greedy rows without a penalty on argmax when all are such, else the sample
     * op with each row's parameters and penalty history; only the ids come back */
    int plain = 1;
    size_t nh = 0;
    for (int i = 0; i < n; i++) {
        const vl3_sampler *s = samplers[i];
        if (!s)
            continue;
        plain &= s->p.greedy && s->p.repetition_penalty == 1.0f;
        if (s->p.repetition_penalty != 1.0f)
            nh += (size_t)s->n_hist;
    }
    if (plain) {
        if ((r = ops->argmax(b, ctx->samp_ids, ctx->logits, n, V)) < 0)
            return vl3_error_set(reterr, r, "the argmax of %d logits rows failed", n);
        goto out;
    }
    if (nh > (size_t)INT32_MAX)
        return vl3_error_set(reterr, -EINVAL, "repetition histories too long");
    if (nh > ctx->samp_hist_cap) {
        int32_t *h = realloc(ctx->samp_hist, nh * sizeof(int32_t));
        if (!h)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        ctx->samp_hist = h;
        ctx->samp_hist_cap = nh;
    }
    nh = 0;
    for (int i = 0; i < n; i++) {
        struct vl3__sample_row *row = &ctx->samp_rows[i];
        if (!samplers[i]) { /* skipped: the cheapest row (greedy), its id dropped */
            *row = (struct vl3__sample_row){.temperature = 1, .top_p = 1,
                                            .repetition_penalty = 1, .top_k = 1};
            continue;
        }
        sampler_row(samplers[i], row); /* draws the row's uniform */
        row->hist_off = (int32_t)nh;
        if (row->n_hist > 0)
            memcpy(ctx->samp_hist + nh, samplers[i]->hist,
                   (size_t)row->n_hist * sizeof(int32_t));
        nh += (size_t)row->n_hist;
    }
    if ((r = ops->sample(b, ctx->samp_ids, ctx->logits, n, V, ctx->samp_rows, ctx->samp_hist,
                         (int)nh)) < 0)
        return vl3_error_set(reterr, r, "sampling %d logits rows on the device failed", n);
out:
    for (int i = 0; i < n; i++)
        if (samplers[i])
            ret_ids[i] = ctx->samp_ids[i];
    return 0;
}
