/* sample.c: choose, decode and convert the sampled frames of one video (see sample.h).
 *
 * A plan lists the frames in the order the decoder emits them with their timestamps. Normally it
 * comes from the packets alone (media_scan: every packet has a unique pts, so the decoder's
 * output order is pts order); inputs that do not allow that (missing or repeated pts) get their
 * plan from a full decode pass. The ffmpeg CLI's fps filter and its output stage are then run on
 * the plan's timestamps with the CLI's integer arithmetic (FFmpeg 5.1, fftools + vf_fps.c):
 *   - packets are shifted by -container start_time (av_rescale_q, round to nearest);
 *   - each frame gets slot floor(pts * tb * F) (round=down);
 *   - for each slot the latest frame in emission order with slot <= it is emitted, gaps are
 *     duplicated, frames overtaken before their slot is emitted are dropped;
 *   - end of stream is the last frame's pts + duration, through the CLI's microsecond round trip;
 *   - the constant-frame-rate output stage repeats the first frame when the first slot s0 > 0
 *     (s0 + 1 copies in all).
 * The decode pass then decodes only what the kept frames need, verifies every decoded frame
 * against the plan and falls back to a decoded plan if the prediction was wrong. */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vl3/sampling_defaults.h"
#include "vl3/util.h"

typedef __int128 i128;

/* Fast mode seeks to a keyframe only when it skips more frames than this. */
#define SEEK_MIN_GAP 16

struct pframe {
    int64_t pts; /* stream time base, MEDIA_NOPTS if none */
    int64_t dur;
    int64_t group; /* predicted plans: the anchor group in decode order (see scan_cb) */
    int anchor;    /* predicted plans: shown after every packet before it (I/P frame) */
};

struct plan {
    struct pframe *f; /* emission order */
    size_t n, cap;
    int64_t *keys; /* keyframe pts, sorted (predicted plans only) */
    size_t nkeys, capkeys;
    int predictable;  /* scan: every packet has a distinct pts */
    int64_t max_pts;  /* scan state: largest pts so far in decode order */
    int64_t ngroups;
};

struct out {
    int64_t k;     /* output position */
    size_t frame;  /* plan index */
    int window;
};

/* fps (a job's sampling.fps, vl3 run --fps) as the fraction the sampler runs on: the smallest
 * denominator up to 1001 that makes it an integer (0.5 -> 1/2, 29.97 -> 2997/100), else
 * millionths */
void sample_fps_fraction(double fps, int *num, int *den)
{
    for (int d = 1; d <= 1001; d++) {
        double n = fps * d;
        if (fabs(n - nearbyint(n)) < 1e-9 * d && n >= 1 && n < 1e9) {
            *num = (int)nearbyint(n);
            *den = d;
            return;
        }
    }
    *num = (int)nearbyint(fps * 1000000);
    *den = 1000000;
    if (*num < 1)
        *num = 1;
}

void sample_params_default(struct sample_params *p)
{
    /* the official sampler: one window over the whole video (jobs get their windows from the
     * daemon: sampling.window, default max_frames / fps) */
    *p = (struct sample_params){.fps_num = (int)VL3_SAMPLING_FPS_DEFAULT, .fps_den = 1,
                                .max_frames = VL3_SAMPLING_MAX_FRAMES_DEFAULT, .window_s = 0,
                                .mode = SAMPLE_MODE_EXACT, .native_min_frames = 4};
}

void sample_linspace_floor(int64_t len, int64_t num, int64_t *idx)
{
    if (num <= 0)
        return;
    if (num == 1) {
        idx[0] = 0;
        return;
    }
    /* numpy: step = (stop - start) / (num - 1); y = arange(num) * step + start; y[-1] = stop */
    double stop = (double)(len - 1);
    double step = stop / (double)(num - 1);
    for (int64_t i = 0; i < num; i++)
        idx[i] = (int64_t)((double)i * step + 0.0);
    idx[num - 1] = (int64_t)stop;
}

/* --- the CLI's integer arithmetic ------------------------------------------------------------ */

/* av_rescale_rnd(a, b, c, AV_ROUND_NEAR_INF) for b, c > 0. */
static int64_t rescale_near(int64_t a, i128 b, i128 c)
{
    if (a == MEDIA_NOPTS)
        return a;
    if (a < 0)
        return -(int64_t)(((i128)(-(i128)a) * b + c / 2) / c);
    return (int64_t)(((i128)a * b + c / 2) / c);
}

/* av_rescale_rnd(a, b, c, AV_ROUND_DOWN | AV_ROUND_PASS_MINMAX) for b, c > 0. */
static int64_t rescale_down(int64_t a, i128 b, i128 c)
{
    if (a == MEDIA_NOPTS)
        return a;
    i128 x = (i128)a * b;
    i128 q = x / c;
    if (x % c != 0 && x < 0)
        q -= 1;
    return (int64_t)q;
}

struct timing {
    int64_t off;    /* ts offset in the stream time base */
    i128 tbn, tbd;  /* stream time base */
    i128 fn, fd;    /* sampling rate F = fn / fd */
    int64_t default_dur; /* a frame's duration when the plan has none (time base) */
};

static int64_t slot_of(const struct timing *t, int64_t pts)
{
    if (pts == MEDIA_NOPTS)
        return MEDIA_NOPTS;
    /* pts * tb / (1/F) */
    return rescale_down(pts + t->off, t->tbn * t->fn, t->tbd * t->fd);
}

/* The fps filter's end-of-stream slot from the last emitted frame (CLI: ist->next_pts). */
static int64_t eof_slot(const struct timing *t, const struct pframe *last)
{
    if (last->pts == MEDIA_NOPTS)
        return MEDIA_NOPTS;
    int64_t dur = last->dur > 0 ? last->dur : t->default_dur;
    int64_t us = rescale_near(last->pts + t->off, t->tbn * 1000000, t->tbd) +
                 rescale_near(dur, t->tbn * 1000000, t->tbd);
    int64_t eof_tb = rescale_near(us, t->tbd, t->tbn * 1000000);
    return rescale_down(eof_tb, t->tbn * t->fn, t->tbd * t->fd);
}

static int outs_push(struct out **v, size_t *n, size_t *cap, size_t frame, size_t max_out)
{
    if (*n >= max_out)
        return VL3_E_LIMIT;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        struct out *nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        *v = nv;
        *cap = nc;
    }
    (*v)[*n] = (struct out){.k = (int64_t)*n, .frame = frame};
    (*n)++;
    return 0;
}

/* Run vf_fps + the CFR output stage on the plan into at most max_out outputs.
 * Returns 0, -ENOMEM, or VL3_E_LIMIT when the timestamps ask for more outputs. */
static int fps_select(const struct plan *pl, const struct timing *t, size_t max_out,
                      struct out **ret_outs, size_t *ret_n)
{
    struct out *o = NULL;
    size_t n = 0, cap = 0;
    int64_t next = MEDIA_NOPTS;
    long f0 = -1;
    int r = 0;

    for (size_t i = 0; i < pl->n; i++) {
        if (f0 < 0) {
            f0 = (long)i;
            continue;
        }
        for (;;) {
            if (next == MEDIA_NOPTS) {
                int64_t s0 = slot_of(t, pl->f[f0].pts);
                if (s0 == MEDIA_NOPTS) { /* initial frame without timestamp: dropped */
                    f0 = (long)i;
                    break;
                }
                next = s0;
            }
            if (slot_of(t, pl->f[i].pts) <= next) { /* the newer frame is acceptable: drop f0 */
                f0 = (long)i;
                break;
            }
            if ((r = outs_push(&o, &n, &cap, (size_t)f0, max_out)) < 0)
                goto fail;
            next++;
        }
    }
    if (f0 >= 0) {
        int64_t eof = eof_slot(t, &pl->f[pl->n - 1]);
        if (next == MEDIA_NOPTS)
            next = slot_of(t, pl->f[f0].pts);
        if (next != MEDIA_NOPTS)
            while (eof != MEDIA_NOPTS && eof > next) {
                if ((r = outs_push(&o, &n, &cap, (size_t)f0, max_out)) < 0)
                    goto fail;
                next++;
            }
    }
    /* The CLI's constant-frame-rate output stage starts at 0: a first slot s0 > 0 makes it
     * write the first frame s0 + 1 times. */
    if (n > 0) {
        int64_t s0 = next - (int64_t)n; /* slots are contiguous from s0 */
        if (s0 > 0) {
            if ((uint64_t)s0 + n > max_out) {
                r = VL3_E_LIMIT;
                goto fail;
            }
            size_t add = (size_t)s0;
            struct out *nv = realloc(o, (n + add) * sizeof(*nv));
            if (!nv) {
                r = -ENOMEM;
                goto fail;
            }
            o = nv;
            memmove(o + add, o, n * sizeof(*o));
            for (size_t i = 0; i < add; i++)
                o[i] = o[add];
            n += add;
            for (size_t i = 0; i < n; i++)
                o[i].k = (int64_t)i;
        }
    }
    *ret_outs = o;
    *ret_n = n;
    return 0;
fail:
    free(o);
    return r;
}

/* transformers' VideoLlama3VideoProcessor.sample_frames on torchcodec's exact-mode metadata
 * (native layout): the video has total = pl->n frames in pts order at an average rate
 * vfps = total / (end - begin) (begin = first pts, end = max pts + duration, in seconds, as
 * torchcodec's scan computes them); it keeps n = floor(min(max(total / vfps * F, min_frames),
 * min(max_frames, total), total)) frames at torch.arange(0, total, total / n).int() (float32
 * values computed in double, truncated) and labels frame idx with float32 idx / vfps. */
static int native_select(const struct plan *pl, const struct media_info *in,
                         const struct sample_params *p, struct out **ret_outs, size_t *ret_n,
                         double *ret_vfps)
{
    double total = (double)pl->n, tb = (double)in->tb_num / in->tb_den;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < pl->n; i++) {
        if (pl->f[i].pts == MEDIA_NOPTS)
            continue;
        int64_t dur = pl->f[i].dur > 0 ? pl->f[i].dur : 0;
        lo = VL3_MIN(lo, pl->f[i].pts);
        hi = VL3_MAX(hi, pl->f[i].pts + dur);
    }
    double span = lo < hi ? (double)hi * tb - (double)lo * tb : 0.0;
    double vfps = span > 0 ? total / span : 1.0;
    double maxf = (double)(p->max_frames > 0 ? VL3_MIN(p->max_frames, (int64_t)pl->n)
                                             : (int64_t)pl->n);
    double want = total / vfps * ((double)p->fps_num / p->fps_den);
    want = VL3_MIN(VL3_MIN(VL3_MAX(want, (double)p->native_min_frames), maxf), total);
    int64_t num = (int64_t)floor(want);
    *ret_outs = NULL;
    *ret_n = 0;
    *ret_vfps = vfps;
    if (num <= 0)
        return 0;
    double step = total / (double)num;
    size_t n = (size_t)ceil(total / step);
    struct out *o = calloc(n, sizeof(*o));
    if (!o)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        float v = (float)((double)i * step);
        int64_t idx = (int64_t)v;
        o[i] = (struct out){.k = idx, .frame = (size_t)VL3_MIN(idx, (int64_t)pl->n - 1)};
    }
    *ret_outs = o;
    *ret_n = n;
    return 0;
}

/* --- plans ------------------------------------------------------------------------------------ */

static int plan_push(struct plan *pl, int64_t pts, int64_t dur)
{
    if (pl->n == pl->cap) {
        size_t nc = pl->cap ? pl->cap * 2 : 1024;
        struct pframe *nf = realloc(pl->f, nc * sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        pl->f = nf;
        pl->cap = nc;
    }
    pl->f[pl->n++] = (struct pframe){.pts = pts, .dur = dur};
    return 0;
}

static void plan_free(struct plan *pl)
{
    free(pl->f);
    free(pl->keys);
    memset(pl, 0, sizeof(*pl));
}

static int scan_cb(void *user, const struct media_packet_info *pkt)
{
    struct plan *pl = user;
    if (pkt->discard)
        return 0;
    if (pkt->pts == MEDIA_NOPTS)
        pl->predictable = 0;
    if (pkt->key && pkt->pts != MEDIA_NOPTS) {
        if (pl->nkeys == pl->capkeys) {
            size_t nc = pl->capkeys ? pl->capkeys * 2 : 64;
            int64_t *nk = realloc(pl->keys, nc * sizeof(*nk));
            if (!nk)
                return -ENOMEM;
            pl->keys = nk;
            pl->capkeys = nc;
        }
        pl->keys[pl->nkeys++] = pkt->pts;
    }
    int r = plan_push(pl, pkt->pts, pkt->duration);
    if (r < 0)
        return r;
    /* An anchor is a packet shown after everything decoded before it (an I or P frame); the
     * reordered packets that follow it (B frames, shown before it) form its group. */
    struct pframe *f = &pl->f[pl->n - 1];
    if (pl->n == 1 || (pkt->pts != MEDIA_NOPTS && pkt->pts > pl->max_pts)) {
        f->anchor = 1;
        pl->ngroups++;
        pl->max_pts = pkt->pts;
    }
    f->group = pl->ngroups - 1;
    return 0;
}

static int cmp_pframe(const void *a, const void *b)
{
    int64_t x = ((const struct pframe *)a)->pts, y = ((const struct pframe *)b)->pts;
    return (x > y) - (x < y);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Plan from packet timestamps. Sets pl->predictable = 0 if it cannot be trusted. */
static int plan_predict(media_input *m, struct plan *pl, vl3_error *reterr)
{
    pl->predictable = 1;
    int r = media_scan(m, scan_cb, pl, reterr);
    if (r < 0) {
        if (r == -ENOMEM)
            vl3_error_set(reterr, r, "out of memory planning the sample");
        return r;
    }
    if (pl->n > 1)
        qsort(pl->f, pl->n, sizeof(*pl->f), cmp_pframe);
    for (size_t i = 1; i < pl->n && pl->predictable; i++)
        if (pl->f[i].pts == pl->f[i - 1].pts)
            pl->predictable = 0;
    if (pl->nkeys > 1)
        qsort(pl->keys, pl->nkeys, sizeof(*pl->keys), cmp_i64);
    return 0;
}

/* Plan from a full decode pass (emission order as the decoder gives it); rewinds afterwards. */
static int plan_decode(media_input *m, struct plan *pl, media_pic *pic, vl3_error *reterr)
{
    int r;
    const struct media_info *in = media_get_info(m);
    media_set_skip(m, NULL, NULL, MEDIA_SKIP_NONE);
    pl->n = 0;
    pl->predictable = 0;
    while ((r = media_decode_next(m, pic, reterr)) > 0) {
        const struct media_frame_info *fi = media_pic_info(pic);
        if ((r = plan_push(pl, fi->pts, fi->duration)) < 0)
            return vl3_error_set(reterr, r, "out of memory planning the sample");
    }
    if (r < 0)
        return r;
    (void)in;
    return media_rewind(m, reterr);
}

/* --- the decode pass ---------------------------------------------------------------------------- */

struct pass {
    const struct plan *pl;
    const unsigned char *need;       /* per plan frame: 1 if kept */
    const unsigned char *need_group; /* fast mode: per group, 1 if a kept frame is in it */
    enum sample_mode mode;
};

static long find_pts(const struct plan *pl, int64_t pts)
{
    size_t lo = 0, hi = pl->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pl->f[mid].pts < pts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < pl->n && pl->f[lo].pts == pts ? (long)lo : -1;
}

static int skip_cb(void *user, const struct media_packet_info *pkt)
{
    const struct pass *ps = user;
    long i = find_pts(ps->pl, pkt->pts);
    if (i >= 0 && ps->need[i])
        return MEDIA_SKIP_NONE;
    if (ps->mode == SAMPLE_MODE_FAST && i >= 0) {
        /* Fast: anchors always; reordered frames only in groups holding a kept frame. This
         * assumes later anchors never refer to reordered frames (true of x264's B-pyramid
         * and of most encoders); the quality test checks it against exact mode. */
        const struct pframe *f = &ps->pl->f[i];
        if (ps->need_group[f->group])
            return MEDIA_SKIP_NONREF; /* the group's references for its kept frame */
        if (f->anchor)
            return MEDIA_SKIP_NONE;
        return MEDIA_SKIP_ALL;
    }
    return MEDIA_SKIP_NONREF;
}

/* Greatest keyframe pts <= pts, or MEDIA_NOPTS. */
static int64_t key_before(const struct plan *pl, int64_t pts)
{
    size_t lo = 0, hi = pl->nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pl->keys[mid] <= pts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? pl->keys[lo - 1] : MEDIA_NOPTS;
}

/* Decode the needed frames and convert them into slot[frame] storage. Returns 0, 1 if the
 * prediction proved wrong (caller falls back), or a negative code. */
static int decode_pass_run(media_input *m, const struct plan *pl, const unsigned char *need,
                           const unsigned char *need_group, uint8_t *const *dst,
                           enum sample_mode mode, media_pic *pic, vl3_error *reterr);

static int decode_parallel(media_input *m, const struct plan *pl, const unsigned char *need,
                           const unsigned char *need_group, uint8_t *const *dst,
                           enum sample_mode mode, int threads, int64_t *ret_decoded,
                           int *ret_segments, vl3_error *reterr);

static int decode_pass(media_input *m, const struct plan *pl, const unsigned char *need,
                       uint8_t *const *dst, enum sample_mode mode, int threads, media_pic *pic,
                       int64_t *ret_decoded, int *ret_segments, vl3_error *reterr)
{
    unsigned char *need_group = NULL;
    if (mode == SAMPLE_MODE_FAST && pl->predictable) {
        need_group = calloc(pl->ngroups ? (size_t)pl->ngroups : 1, 1);
        if (!need_group)
            return vl3_error_set(reterr, -ENOMEM, "out of memory");
        for (size_t i = 0; i < pl->n; i++)
            if (need[i])
                need_group[pl->f[i].group] = 1;
    }
    int r = 2;
    if (pl->predictable && threads > 1 && media_get_info(m)->indexed)
        r = decode_parallel(m, pl, need, need_group, dst, mode, threads, ret_decoded,
                            ret_segments, reterr);
    if (r == 2)
        r = decode_pass_run(m, pl, need, need_group, dst, mode, pic, reterr);
    media_set_skip(m, NULL, NULL, MEDIA_SKIP_NONE);
    free(need_group);
    return r;
}

static int decode_pass_run(media_input *m, const struct plan *pl, const unsigned char *need,
                           const unsigned char *need_group, uint8_t *const *dst,
                           enum sample_mode mode, media_pic *pic, vl3_error *reterr)
{
    struct pass ps = {pl, need, need_group, mode};
    int indexed = media_get_info(m)->indexed;
    size_t want = 0, got = 0;
    size_t arrival = 0;
    long last = -1;
    int64_t last_pts = MEDIA_NOPTS;
    int r;

    for (size_t i = 0; i < pl->n; i++)
        want += need[i];
    if (pl->predictable)
        media_set_skip(m, skip_cb, &ps, MEDIA_SKIP_NONE);
    else
        media_set_skip(m, NULL, NULL, MEDIA_SKIP_NONE);

    /* fast mode: the needed frames in pts order, to seek over long stretches */
    size_t next_need = 0;
    int64_t sought = MEDIA_NOPTS;

    while (got < want) {
        if (mode == SAMPLE_MODE_FAST && pl->predictable && pl->nkeys > 0 && indexed) {
            while (next_need < pl->n && (!need[next_need] || (long)next_need <= last))
                next_need++;
            if (next_need < pl->n) {
                int64_t k = key_before(pl, pl->f[next_need].pts);
                long ki = k == MEDIA_NOPTS ? -1 : find_pts(pl, k);
                /* Seek when a keyframe lies well past here, before the next needed frame
                 * (a short gap is cheaper to decode through than to seek over). */
                if (ki >= 0 && k != sought && ki - last > SEEK_MIN_GAP &&
                    (last_pts == MEDIA_NOPTS ? k > pl->f[0].pts : k > last_pts)) {
                    if ((r = media_seek(m, k, reterr)) < 0)
                        return r;
                    sought = k;
                }
            }
        }
        r = media_decode_next(m, pic, reterr);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        const struct media_frame_info *fi = media_pic_info(pic);
        long idx;
        if (pl->predictable) {
            idx = find_pts(pl, fi->pts);
            if (idx < 0)
                return 1;
            if (idx <= last) {
                if (mode == SAMPLE_MODE_FAST)
                    continue; /* leading pictures after a seek */
                return 1;
            }
        } else {
            idx = (long)arrival++;
            if ((size_t)idx >= pl->n || pl->f[idx].pts != fi->pts)
                return 1;
        }
        last = idx;
        last_pts = fi->pts;
        if (need[idx]) {
            if ((r = media_pic_to_rgb(m, pic, dst[idx], reterr)) < 0)
                return r;
            got++;
        }
    }
    return got == want ? 0 : 1;
}


/* --- parallel segments ---------------------------------------------------------------------------
 * With a seek index and a trusted plan, the kept frames are split at keyframes into segments that
 * independent decoders (one thread each) take from a shared counter. A segment starts at its
 * keyframe and owns the plan frames with pts in [its keyframe, the next segment's keyframe); it
 * decodes until all its kept frames are out (leading pictures of an open GOP included) and ignores
 * frames owned by others. Decoding from a sync sample reproduces the frames shown after it. */

struct seg {
    int64_t key;     /* keyframe pts to seek to */
    size_t lo, hi;   /* owned plan frames [lo, hi) */
    size_t want;     /* kept frames among them */
};

struct segjob {
    media_input *parent;
    const struct plan *pl;
    const unsigned char *need, *need_group;
    uint8_t *const *dst;
    enum sample_mode mode;
    struct seg *segs;
    size_t nsegs;
    pthread_mutex_t lock;
    size_t next;      /* next segment to take */
    int result;       /* first failure: < 0 error, 1 prediction mismatch */
    vl3_error err;
    int64_t decoded;
};

static size_t lower_bound_pts(const struct plan *pl, int64_t pts)
{
    size_t lo = 0, hi = pl->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pl->f[mid].pts < pts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Decode one segment with mi. 0, 1 on a prediction mismatch, or a negative code. */
static int seg_run(struct segjob *j, media_input *mi, const struct seg *sg, media_pic *pic,
                   vl3_error *reterr)
{
    int r = media_seek(mi, sg->key, reterr);
    if (r < 0)
        return r;
    size_t got = 0;
    long last = -1;
    while (got < sg->want) {
        r = media_decode_next(mi, pic, reterr);
        if (r < 0)
            return r;
        if (r == 0)
            return 1;
        long idx = find_pts(j->pl, media_pic_info(pic)->pts);
        if (idx < 0)
            return 1;
        if ((size_t)idx < sg->lo || (size_t)idx >= sg->hi)
            continue; /* another segment's frame */
        if (idx <= last)
            return 1;
        last = idx;
        if (j->need[idx]) {
            if ((r = media_pic_to_rgb(mi, pic, j->dst[idx], reterr)) < 0)
                return r;
            got++;
        }
    }
    return 0;
}

static void *seg_worker(void *arg)
{
    struct segjob *j = arg;
    media_input *mi = NULL;
    media_pic *pic = media_pic_new();
    vl3_error err = {0};
    int r = pic ? media_clone(j->parent, 1, &mi, &err) : -ENOMEM;
    if (r == 0) {
        struct pass ps = {j->pl, j->need, j->need_group, j->mode};
        media_set_skip(mi, skip_cb, &ps, MEDIA_SKIP_NONE);
        for (;;) {
            pthread_mutex_lock(&j->lock);
            size_t s = j->result ? j->nsegs : j->next++;
            pthread_mutex_unlock(&j->lock);
            if (s >= j->nsegs)
                break;
            if ((r = seg_run(j, mi, &j->segs[s], pic, &err)) != 0)
                break;
        }
    }
    pthread_mutex_lock(&j->lock);
    if (r != 0 && (j->result == 0 || (j->result == 1 && r < 0))) {
        j->result = r;
        j->err = err;
    }
    if (mi)
        j->decoded += media_frames_decoded(mi);
    pthread_mutex_unlock(&j->lock);
    media_pic_free(pic);
    media_close(mi);
    return NULL;
}

/* Split the kept frames into segments at keyframes. Returns the count (0: not possible). */
static size_t plan_segments(const struct plan *pl, const unsigned char *need, size_t want,
                            int threads, struct seg **ret)
{
    if (pl->nkeys < 2 || threads < 2 || want < 2)
        return 0;
    /* a kept frame before the first keyframe needs the stream's start */
    for (size_t i = 0; i < pl->n && pl->f[i].pts < pl->keys[0]; i++)
        if (need[i])
            return 0;
    size_t target = (want + 16 * (size_t)threads - 1) / (16 * (size_t)threads);
    struct seg *segs = calloc(pl->nkeys, sizeof(*segs));
    if (!segs)
        return 0;
    size_t n = 0;
    struct seg cur = {0};
    int open = 0;
    for (size_t k = 0; k < pl->nkeys; k++) {
        size_t lo = lower_bound_pts(pl, pl->keys[k]);
        size_t hi = k + 1 < pl->nkeys ? lower_bound_pts(pl, pl->keys[k + 1]) : pl->n;
        size_t w = 0;
        for (size_t i = lo; i < hi; i++)
            w += need[i];
        if (w == 0) {
            if (open) { /* a gap without kept frames ends the segment (skipped by seeking) */
                segs[n++] = cur;
                open = 0;
            }
            continue;
        }
        if (!open) {
            cur = (struct seg){.key = pl->keys[k], .lo = lo, .hi = hi, .want = w};
            open = 1;
        } else {
            cur.hi = hi;
            cur.want += w;
        }
        if (cur.want >= target) {
            segs[n++] = cur;
            open = 0;
        }
    }
    if (open)
        segs[n++] = cur;
    if (n < 2) {
        free(segs);
        return 0;
    }
    *ret = segs;
    return n;
}

/* Decode the kept frames with `threads` parallel segment decoders. 0, 1 (fall back), or < 0. */
static int decode_parallel(media_input *m, const struct plan *pl, const unsigned char *need,
                           const unsigned char *need_group, uint8_t *const *dst,
                           enum sample_mode mode, int threads, int64_t *ret_decoded,
                           int *ret_segments, vl3_error *reterr)
{
    size_t want = 0;
    for (size_t i = 0; i < pl->n; i++)
        want += need[i];
    struct seg *segs = NULL;
    size_t nsegs = plan_segments(pl, need, want, threads, &segs);
    if (nsegs == 0)
        return 2; /* not applicable */
    *ret_segments = (int)nsegs;
    struct segjob j = {.parent = m, .pl = pl, .need = need, .need_group = need_group, .dst = dst,
                       .mode = mode, .segs = segs, .nsegs = nsegs};
    pthread_mutex_init(&j.lock, NULL);
    int nt = (int)VL3_MIN((size_t)threads, nsegs);
    pthread_t tid[64];
    int started = 0;
    nt = VL3_MIN(nt, 64);
    for (int i = 0; i < nt; i++)
        if (pthread_create(&tid[started], NULL, seg_worker, &j) == 0)
            started++;
    if (started == 0) {
        seg_worker(&j); /* no thread could start: do it here */
    }
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&j.lock);
    free(segs);
    *ret_decoded = j.decoded;
    if (j.result < 0 && reterr)
        *reterr = j.err;
    return j.result;
}

/* --- driver ------------------------------------------------------------------------------------- */

void sample_result_free(struct sample_result *r)
{
    if (!r)
        return;
    free(r->frames);
    free(r->pixels);
    free(r);
}

/* ffprobe prints start_time with "%f"; the official code parses that text. */
static double probe_start_time(const struct media_info *in)
{
    if (in->stream_start == MEDIA_NOPTS)
        return 0.0;
    char buf[64];
    snprintf(buf, sizeof(buf), "%f", (double)in->stream_start * in->tb_num / in->tb_den);
    return strtod(buf, NULL);
}

/* Window number of output k. */
static int window_of(const struct sample_params *p, int64_t k)
{
    if (p->window_s <= 0)
        return 0;
    double t = (double)k * p->fps_den / p->fps_num;
    return (int)floor(t / p->window_s + 1e-9);
}

/* Keep outs per window (numpy floor(linspace) within each window over max_frames). */
static int subsample(const struct sample_params *p, struct out *o, size_t n, size_t *ret_n,
                     int *ret_windows, int *ret_sub)
{
    size_t w = 0, kept = 0;
    int windows = 0, sub = 0;
    int64_t *idx = NULL;
    while (w < n) {
        int win = window_of(p, o[w].k);
        size_t e = w;
        while (e < n && window_of(p, o[e].k) == win)
            e++;
        size_t len = e - w;
        windows++;
        if (p->max_frames > 0 && (int64_t)len > p->max_frames) {
            sub = 1;
            int64_t num = p->max_frames;
            idx = realloc(idx, (size_t)num * sizeof(*idx));
            if (!idx)
                return -ENOMEM;
            sample_linspace_floor((int64_t)len, num, idx);
            for (int64_t j = 0; j < num; j++) {
                o[kept] = o[w + (size_t)idx[j]];
                o[kept++].window = win;
            }
        } else {
            for (size_t j = w; j < e; j++) {
                o[kept] = o[j];
                o[kept++].window = win;
            }
        }
        w = e;
    }
    free(idx);
    *ret_n = kept;
    *ret_windows = windows;
    *ret_sub = sub;
    return 0;
}

int sample_video(media_input *m, const struct sample_params *p, struct sample_result **ret_result,
                 vl3_error *reterr)
{
    const struct media_info *in = media_get_info(m);
    struct plan pl = {0};
    struct out *o = NULL;
    size_t n_out = 0, n_kept = 0;
    unsigned char *need = NULL;
    uint8_t **dst = NULL;
    struct sample_result *res = NULL;
    media_pic *pic = NULL;
    int r, windows = 0, sub = 0;
    double native_fps = 1.0;

    if (!m || !p || !ret_result || p->fps_num <= 0 || p->fps_den <= 0 || p->max_frames < 0 ||
        p->mode < 0 || p->mode >= SAMPLE_MODE_COUNT)
        return vl3_error_set(reterr, -EINVAL, "invalid sampling parameters");

    struct timing t = {
        .off = in->format_start_us == MEDIA_NOPTS
                   ? 0
                   : rescale_near(-in->format_start_us, in->tb_den, (i128)in->tb_num * 1000000),
        .tbn = in->tb_num,
        .tbd = in->tb_den,
        .fn = p->fps_num,
        .fd = p->fps_den,
    };
    /* fallback duration (CLI: duration_dts from the frame rate), in the stream time base */
    if (in->fps_num > 0 && in->fps_den > 0)
        t.default_dur = rescale_near(1, (i128)in->fps_den * in->tb_den,
                                     (i128)in->fps_num * in->tb_num);

    pic = media_pic_new();
    res = calloc(1, sizeof(*res));
    if (!pic || !res) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }

    if ((r = plan_predict(m, &pl, reterr)) < 0)
        goto fail;
    int attempt = 0;
again:
    if (!pl.predictable && (r = plan_decode(m, &pl, pic, reterr)) < 0)
        goto fail;
    free(o);
    o = NULL;
    /* Broken timestamps can ask for endless duplicates: allow twice the container's duration
     * (or 24 h when unknown) at F, plus slack. */
    double span_s = in->duration_us != MEDIA_NOPTS && in->duration_us > 0
                        ? (double)in->duration_us / 1e6
                        : 86400.0;
    double max_out_d = (span_s * 2 + 10) * p->fps_num / p->fps_den + 1000;
    size_t max_out = max_out_d > 5e7 ? (size_t)5e7 : (size_t)max_out_d;
    if (p->native) {
        if ((r = native_select(&pl, in, p, &o, &n_out, &native_fps)) < 0) {
            vl3_error_set(reterr, r, "out of memory");
            goto fail;
        }
    } else if ((r = fps_select(&pl, &t, max_out, &o, &n_out)) < 0) {
        if (r == VL3_E_LIMIT)
            vl3_error_set(reterr, r,
                          "the timestamps of the video ask for more than %zu sampled frames "
                          "(broken or discontinuous timestamps)",
                          max_out);
        else
            vl3_error_set(reterr, r, "out of memory");
        goto fail;
    }
    if (n_out == 0) {
        if (pl.n == 0)
            r = vl3_error_set(reterr, VL3_E_DECODE, "input has no decodable video frames");
        else
            r = vl3_error_set(reterr, VL3_E_DECODE,
                              "sampling %d frames at %g fps yields no frames (the video is "
                              "shorter than one sampling interval)",
                              (int)pl.n, (double)p->fps_num / p->fps_den);
        goto fail;
    }
    if (p->native) {
        n_kept = n_out;
        windows = 1;
        sub = n_out < pl.n;
    } else if ((r = subsample(p, o, n_out, &n_kept, &windows, &sub)) < 0) {
        vl3_error_set(reterr, r, "out of memory");
        goto fail;
    }
    if (p->max_total > 0 && (int64_t)n_kept > p->max_total) {
        r = vl3_error_set(reterr, VL3_E_LIMIT,
                          "sampling keeps %zu frames in %d windows, more than the %lld frames "
                          "allowed per job (media.max_frames); ask for a lower fps or fewer "
                          "frames per window",
                          n_kept, windows, (long long)p->max_total);
        goto fail;
    }

    /* Fast mode: a kept reordered frame next to an anchor is replaced by that anchor (one
     * source frame away), so its group need not be decoded. */
    if (p->mode == SAMPLE_MODE_FAST && pl.predictable)
        for (size_t i = 0; i < n_kept; i++) {
            size_t f = o[i].frame;
            if (pl.f[f].anchor)
                continue;
            if (f > 0 && pl.f[f - 1].anchor)
                o[i].frame = f - 1;
            else if (f + 1 < pl.n && pl.f[f + 1].anchor)
                o[i].frame = f + 1;
        }

    /* storage: one picture per distinct needed plan frame */
    size_t fsize = (size_t)in->width * (size_t)in->height * 3, ndistinct = 0;
    free(need);
    free(dst);
    need = calloc(pl.n ? pl.n : 1, 1);
    dst = calloc(pl.n ? pl.n : 1, sizeof(*dst));
    if (!need || !dst) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_kept; i++)
        if (!need[o[i].frame]) {
            need[o[i].frame] = 1;
            ndistinct++;
        }
    size_t total;
    if (vl3_mul_size(fsize, ndistinct, &total) < 0) {
        r = vl3_error_set(reterr, VL3_E_LIMIT, "sampled frames do not fit in memory");
        goto fail;
    }
    if (p->max_bytes > 0 && total > (size_t)p->max_bytes) {
        r = vl3_error_set(reterr, VL3_E_LIMIT,
                          "%zu sampled frames of %dx%d need %zu bytes, more than the memory "
                          "budget (%lld bytes); use fewer frames per window or shorter windows",
                          ndistinct, in->width, in->height, total, (long long)p->max_bytes);
        goto fail;
    }
    free(res->pixels);
    res->pixels = malloc(total ? total : 1);
    if (!res->pixels) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory for %zu sampled frames of %dx%d",
                          ndistinct, in->width, in->height);
        goto fail;
    }
    for (size_t i = 0, j = 0; i < pl.n; i++)
        if (need[i])
            dst[i] = res->pixels + fsize * j++;

    int64_t par_decoded = 0;
    int segments = 0;
    r = decode_pass(m, &pl, need, dst, p->mode, in->threads, pic, &par_decoded, &segments,
                    reterr);
    if (r < 0)
        goto fail;
    if (r == 1) {
        /* The packet plan did not describe what the decoder emits: plan from a decode pass. */
        if (!pl.predictable || attempt++ > 0) {
            r = vl3_error_set(reterr, VL3_E_DECODE,
                              "decoder output of \"%s\" does not repeat between passes",
                              in->format);
            goto fail;
        }
        pl.predictable = 0;
        if ((r = media_rewind(m, reterr)) < 0)
            goto fail;
        goto again;
    }

    res->frames = calloc(n_kept ? n_kept : 1, sizeof(*res->frames));
    if (!res->frames) {
        r = vl3_error_set(reterr, -ENOMEM, "out of memory");
        goto fail;
    }
    res->width = in->width;
    res->height = in->height;
    res->n = n_kept;
    res->n_windows = windows;
    res->n_sampled = (int64_t)n_out;
    res->subsampled = sub;
    res->start_time = probe_start_time(in);
    res->frames_decoded = media_frames_decoded(m) + par_decoded;
    res->predicted = pl.predictable;
    res->segments = r == 0 ? segments : 0;
    /* numpy.arange(start_time, ..., 1 / fps)[k], as the reference labels frames: numpy fills
     * start + k * delta with delta = (start + step) - start, which can differ from the step in
     * its last bit (and so round differently at a tie of the prompt's one decimal) */
    double ts_step = 1.0 / ((double)p->fps_num / p->fps_den);
    double ts_delta = (res->start_time + ts_step) - res->start_time;
    for (size_t i = 0; i < n_kept; i++) {
        struct sample_frame *f = &res->frames[i];
        f->rgb = dst[o[i].frame];
        f->timestamp = p->native ? (double)((float)o[i].k / (float)native_fps)
                                 : res->start_time + (double)o[i].k * ts_delta;
        f->index = o[i].k;
        f->src_pts = pl.f[o[i].frame].pts;
        f->window = o[i].window;
    }
    res->pictures_converted = (int64_t)ndistinct;
    *ret_result = res;
    res = NULL;
    r = 0;
fail:
    sample_result_free(res);
    media_pic_free(pic);
    plan_free(&pl);
    free(o);
    free(need);
    free(dst);
    return r;
}
