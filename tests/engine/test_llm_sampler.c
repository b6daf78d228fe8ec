/* test_llm_sampler.c: the sampler's HF semantics on hand-computed examples: greedy = argmax,
 * repetition penalty (divide positive, multiply negative logits of ids in the history), top-k
 * and top-p keep exactly the expected sets (ties at the k-th value kept; top-p cut on the
 * ascending cumulative probability), temperature reshapes the distribution, and draws are
 * deterministic per seed. Frequency checks use enough draws for a > 5 sigma margin. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "vl3/engine.h"

static vl3_sampler *mk(vl3_sampler_params p, int V)
{
    vl3_sampler *s = NULL;
    vl3_error err = {0};
    if (vl3_sampler_new(&p, V, &s, &err) < 0)
        fprintf(stderr, "sampler: %s\n", err.msg);
    return s;
}

/* Draw n times; counts[V] receives how often each id came. */
static int draw(vl3_sampler *s, const float *lg, int V, int n, int *counts)
{
    memset(counts, 0, sizeof(int) * (size_t)V);
    for (int i = 0; i < n; i++) {
        int32_t id;
        if (vl3_sampler_sample(s, lg, &id, NULL) < 0 || id < 0 || id >= V)
            return -1;
        counts[id]++;
    }
    return 0;
}

TEST(sampler_greedy_and_penalty)
{
    vl3_sampler_params p = vl3_sampler_params_default();
    p.greedy = 1;
    float lg[6] = {0.5f, 3.0f, 2.9f, 3.0f, -0.5f, -0.6f};
    vl3_sampler *s = mk(p, 6);
    ASSERT(s);
    int32_t id;
    ASSERT_OK(vl3_sampler_sample(s, lg, &id, NULL));
    ASSERT_EQ(id, 1); /* first of the tied maxima, as torch.argmax */
    vl3_sampler_free(s);

    /* penalty 1.1 on ids {1, 3}: 3.0 -> 2.727 < 2.9, so id 2 wins */
    p.repetition_penalty = 1.1f;
    s = mk(p, 6);
    ASSERT_OK(vl3_sampler_accept(s, 1));
    ASSERT_OK(vl3_sampler_accept(s, 3));
    ASSERT_OK(vl3_sampler_accept(s, 3)); /* distinct ids: a repeat is not penalised twice */
    ASSERT_OK(vl3_sampler_sample(s, lg, &id, NULL));
    ASSERT_EQ(id, 2);
    ASSERT_EQ(lg[1], 3.0f); /* the caller's logits are not modified */
    vl3_sampler_free(s);

    /* negative logits are multiplied: [-0.5, -0.6] with penalty 1.5 on id 0 -> [-0.75, -0.6] */
    float neg[2] = {-0.5f, -0.6f};
    p.repetition_penalty = 1.5f;
    s = mk(p, 2);
    ASSERT_OK(vl3_sampler_sample(s, neg, &id, NULL));
    ASSERT_EQ(id, 0);
    ASSERT_OK(vl3_sampler_accept(s, 0));
    ASSERT_OK(vl3_sampler_sample(s, neg, &id, NULL));
    ASSERT_EQ(id, 1);
    /* a penalty below 1 favours the seen ids: 1/0.5 doubles, *0.5 halves */
    vl3_sampler_free(s);
    p.repetition_penalty = 0.5f;
    float two[2] = {1.0f, 1.5f};
    s = mk(p, 2);
    ASSERT_OK(vl3_sampler_accept(s, 0));
    ASSERT_OK(vl3_sampler_sample(s, two, &id, NULL));
    ASSERT_EQ(id, 0);
    /* reset forgets the history */
    vl3_sampler_reset(s);
    ASSERT_OK(vl3_sampler_sample(s, two, &id, NULL));
    ASSERT_EQ(id, 1);
    ASSERT_EQ(vl3_sampler_accept(s, 2), -EINVAL);
    vl3_sampler_free(s);
    return 0;
}

TEST(sampler_top_k_set)
{
    enum { V = 8, N = 3000 };
    float lg[V] = {0.1f, 2.0f, -1.0f, 2.05f, 1.95f, 0.0f, -3.0f, 1.0f};
    int cnt[V];
    vl3_sampler_params p = vl3_sampler_params_default();
    p.top_k = 3;
    p.top_p = 1.0f;
    p.seed = 1;
    vl3_sampler *s = mk(p, V);
    ASSERT_OK(draw(s, lg, V, N, cnt));
    for (int i = 0; i < V; i++) {
        int kept = i == 1 || i == 3 || i == 4;
        if (kept ? cnt[i] < N / 5 : cnt[i] != 0)
            TEST__FAIL("top-k: id %d drawn %d times", i, cnt[i]);
    }
    vl3_sampler_free(s);
    /* ties at the k-th value are all kept (HF removes only values strictly below it) */
    float tie[V] = {1.0f, 3.0f, 1.0f, 0.5f, 1.0f, -1.0f, 0.9f, 0.0f};
    p.top_k = 2;
    s = mk(p, V);
    ASSERT_OK(draw(s, tie, V, N, cnt));
    for (int i = 0; i < V; i++) {
        int kept = i == 0 || i == 1 || i == 2 || i == 4;
        if (kept ? cnt[i] == 0 : cnt[i] != 0)
            TEST__FAIL("top-k ties: id %d drawn %d times", i, cnt[i]);
    }
    vl3_sampler_free(s);
    return 0;
}

TEST(sampler_top_p_set)
{
    enum { V = 5, N = 4000 };
    /* probabilities 0.5, 0.3, 0.15, 0.05, 0 (a -inf logit) */
    float lg[V] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f), -INFINITY};
    int cnt[V];
    vl3_sampler_params p = vl3_sampler_params_default();
    p.top_k = 0;
    p.seed = 9;
    /* ascending cumulative: 0.05, 0.20, 0.50, 1.0. top_p 0.75 removes cum <= 0.25: {3, 2} */
    p.top_p = 0.75f;
    vl3_sampler *s = mk(p, V);
    ASSERT_OK(draw(s, lg, V, N, cnt));
    ASSERT(cnt[0] > 0 && cnt[1] > 0 && cnt[2] == 0 && cnt[3] == 0 && cnt[4] == 0);
    /* renormalised: P(0) = 0.5 / 0.8 = 0.625; sd over N draws ~ 0.0077 */
    ASSERT_NEAR((double)cnt[0] / N, 0.625, 0.04);
    vl3_sampler_free(s);
    /* top_p 0.85 removes cum <= 0.15: only {3} */
    p.top_p = 0.85f;
    s = mk(p, V);
    ASSERT_OK(draw(s, lg, V, N, cnt));
    ASSERT(cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0 && cnt[3] == 0 && cnt[4] == 0);
    ASSERT_NEAR((double)cnt[2] / N, 0.15 / 0.95, 0.03);
    vl3_sampler_free(s);
    /* a tiny top_p keeps the single most likely id */
    p.top_p = 0.01f;
    s = mk(p, V);
    ASSERT_OK(draw(s, lg, V, 200, cnt));
    ASSERT_EQ(cnt[0], 200);
    vl3_sampler_free(s);
    /* top-k then top-p: top_k 2 leaves {0, 1} (0.625, 0.375); top_p 0.6 removes cum <= 0.4: {1} */
    p.top_k = 2;
    p.top_p = 0.6f;
    s = mk(p, V);
    ASSERT_OK(draw(s, lg, V, 200, cnt));
    ASSERT_EQ(cnt[0], 200);
    vl3_sampler_free(s);
    return 0;
}

TEST(sampler_temperature_and_seed)
{
    enum { N = 4000 };
    float lg[2] = {logf(0.75f), logf(0.25f)};
    int cnt[2];
    vl3_sampler_params p = vl3_sampler_params_default();
    p.top_k = 0;
    p.seed = 5;
    vl3_sampler *s = mk(p, 2);
    ASSERT_OK(draw(s, lg, 2, N, cnt));
    ASSERT_NEAR((double)cnt[0] / N, 0.75, 0.035);
    vl3_sampler_free(s);
    /* T = 0.5 squares the odds: 0.75^2 / (0.75^2 + 0.25^2) = 0.9 */
    p.temperature = 0.5f;
    s = mk(p, 2);
    ASSERT_OK(draw(s, lg, 2, N, cnt));
    ASSERT_NEAR((double)cnt[0] / N, 0.9, 0.025);
    vl3_sampler_free(s);

    /* determinism: same seed, same draws; reset replays; another seed differs */
    enum { V = 50, M = 200 };
    float flat[V];
    for (int i = 0; i < V; i++)
        flat[i] = (float)sin(i);
    p = vl3_sampler_params_default();
    p.seed = 1234;
    int32_t a[M], b[M], c[M];
    vl3_sampler *s1 = mk(p, V), *s2 = mk(p, V);
    p.seed = 1235;
    vl3_sampler *s3 = mk(p, V);
    for (int i = 0; i < M; i++) {
        ASSERT_OK(vl3_sampler_sample(s1, flat, &a[i], NULL));
        ASSERT_OK(vl3_sampler_sample(s2, flat, &b[i], NULL));
        ASSERT_OK(vl3_sampler_sample(s3, flat, &c[i], NULL));
    }
    ASSERT_MEM_EQ(a, b, sizeof(a));
    ASSERT(memcmp(a, c, sizeof(a)) != 0);
    vl3_sampler_reset(s1);
    for (int i = 0; i < M; i++) {
        ASSERT_OK(vl3_sampler_sample(s1, flat, &b[i], NULL));
    }
    ASSERT_MEM_EQ(a, b, sizeof(a));
    vl3_sampler_free(s1), vl3_sampler_free(s2), vl3_sampler_free(s3);
    return 0;
}

TEST(sampler_bad_params)
{
    vl3_sampler *s = NULL;
    vl3_error err = {0};
    vl3_sampler_params p = vl3_sampler_params_default();
    p.temperature = 0;
    ASSERT_EQ(vl3_sampler_new(&p, 10, &s, &err), -EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "temperature");
    p = vl3_sampler_params_default();
    p.top_p = 1.5f;
    ASSERT_EQ(vl3_sampler_new(&p, 10, &s, &err), -EINVAL);
    p.top_p = 0.0f;
    ASSERT_EQ(vl3_sampler_new(&p, 10, &s, &err), -EINVAL);
    p = vl3_sampler_params_default();
    p.repetition_penalty = 0;
    ASSERT_EQ(vl3_sampler_new(&p, 10, &s, &err), -EINVAL);
    p = vl3_sampler_params_default();
    ASSERT_EQ(vl3_sampler_new(&p, 0, &s, &err), -EINVAL);
    ASSERT(s == NULL);
    vl3_sampler_free(NULL);
    return 0;
}
