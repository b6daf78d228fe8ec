/* worker_decode.c: the decode threads. Each takes a job, opens its input under the media roots
 * (paths.h), refuses it up front when its windows, answers or frames pass the jobs.* limits,
 * reserves the sampled frames' memory in the budget, samples the video (sample.h; windows give
 * one set of frames each), then preprocesses and DiffFP-masks one window at a time (the window
 * is one request, as `vl3 run` would make it) and hands each to the engine thread at once,
 * waiting before the next while the budget is full. Windows the token cache answers reserve
 * their rows and stream the same way (worker_cache.h). A still image
 * (media_info.is_image) is one unit of one frame, preprocessed as an image, as `vl3 run --image`
 * does. Any failure fails the job only. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "media.h"
#include "media_conf.h"
#include "vl3/log.h"
#include "worker_cache.h"
#include "vl3/util.h"
#include "worker_internal.h"

#define PATCH_FLOATS 588 /* 3 * 14 * 14 values per patch */

static struct worker_job *next_job(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->jobq_head && !w->stopping)
        pthread_cond_wait(&w->cond_jobs, &w->lock);
    struct worker_job *j = w->jobq_head;
    if (j) {
        w->jobq_head = j->next_q;
        if (!w->jobq_head)
            w->jobq_tail = NULL;
        w->decoding++;
    }
    pthread_mutex_unlock(&w->lock);
    return j;
}

/* Upper bound of the bytes sampling will hold for the sampled frames. */
static int64_t estimate_bytes(const struct media_info *mi, const struct sample_params *sp)
{
    double fps = (double)sp->fps_num / sp->fps_den;
    double dur = mi->duration_us != MEDIA_NOPTS && mi->duration_us > 0 ? mi->duration_us / 1e6 : 0;
    int64_t frames;
    if (dur > 0) {
        frames = (int64_t)(dur * fps) + 2;
        int64_t windows = sp->window_s > 0 ? (int64_t)ceil(dur / sp->window_s) + 1 : 1;
        if (sp->max_frames > 0 && frames > sp->max_frames * windows)
            frames = sp->max_frames * windows;
    } else {
        frames = sp->max_frames > 0 ? sp->max_frames : 1024;
    }
    if (sp->max_total > 0 && frames > sp->max_total)
        frames = sp->max_total; /* more is refused by sample_video before decoding */
    int64_t px = (int64_t)mi->width * mi->height;
    /* RGB24 frames; each window's float pixel values are charged when it is prepared */
    return frames * px * 3;
}

/* Preprocess one unit's frames and mask its tokens (the pipeline's step: DiffFP, or all kept);
 * the pixel values are what the unit holds in the budget. */
static int unit_prepare(struct worker *w, struct worker_unit *u, const vl3_image *frames,
                        vl3_error *err)
{
    int rc = pipeline_window_prepare(&w->pl, &u->pw, frames, err);
    if (rc < 0)
        return rc;
    u->reserved = u->pw.batch.n_patches * u->pw.batch.patch_dim * (int64_t)sizeof(float);
    return 0;
}

/* Hand a prepared unit to the engine thread: its bytes count in the budget (charged without
 * waiting: room was awaited before it was prepared) and in the job's queued bytes. */
static void queue_unit(struct worker *w, struct worker_job *job, struct worker_unit *u)
{
    worker_budget_charge(&w->budget, u->reserved);
    pthread_mutex_lock(&w->lock);
    job->pending++;
    u->queued = 1;
    job->queued_bytes += u->reserved;
    if (w->unitq_tail)
        w->unitq_tail->next = u;
    else
        w->unitq_head = u;
    w->unitq_tail = u;
    w->unitq_frames += u->pw.n_frames;
    pthread_cond_signal(&w->cond_engine);
    pthread_mutex_unlock(&w->lock);
}

/* Refuse a unit that could never fit beside the job's frames (held) in memory_budget. */
static int unit_fits(struct worker *w, const struct worker_job *job, const struct worker_unit *u,
                     int64_t held, vl3_error *err)
{
    if (u->reserved + held <= w->budget.total)
        return 0;
    return vl3_error_set(err, VL3_E_LIMIT,
                         "window %d of \"%s\" needs %lld bytes of pixel values besides %lld bytes "
                         "of frames, more than memory_budget %lld",
                         u->pw.window, job->input, (long long)u->reserved, (long long)held,
                         (long long)w->budget.total);
}

/* Per-job statistics of the windows streamed to the engine, and their indices (the token
 * cache's window list). */
struct stream_stats {
    int units;
    int64_t max_bytes, sum_bytes;
    int *wins, n_wins, cap_wins;
    int wins_lost; /* out of memory for the list: none is stored */
};

static void stream_count(struct stream_stats *st, const struct worker_unit *u)
{
    if (!st->wins_lost && st->n_wins == st->cap_wins) {
        int cap = st->cap_wins ? 2 * st->cap_wins : 16;
        int *nw = realloc(st->wins, sizeof(int) * (size_t)cap);
        if (nw) {
            st->wins = nw;
            st->cap_wins = cap;
        } else {
            st->wins_lost = 1;
        }
    }
    if (!st->wins_lost)
        st->wins[st->n_wins++] = u->pw.window;
    st->units++;
    st->sum_bytes += u->reserved;
    if (u->reserved > st->max_bytes)
        st->max_bytes = u->reserved;
}

/* The one unit of a still image, queued. */
static int make_image_unit(struct worker *w, struct worker_job *job, const image_rgb *im,
                           int64_t held, struct stream_stats *st,
                           struct worker_cache_plan *plan, vl3_error *err)
{
    if (plan && plan->n > 0 && plan->hit[0]) { /* token cache hit: no preprocessing */
        struct worker_unit *cu = NULL;
        if (worker_cache_unit(w, job, plan, 0, &cu) < 0)
            return vl3_error_set(err, -ENOMEM, "out of memory");
        stream_count(st, cu);
        queue_unit(w, job, cu);
        return 0;
    }
    struct worker_unit *u = calloc(1, sizeof(*u));
    if (!u)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    u->job = job;
    u->pw.n_frames = 1;
    u->pw.is_image = 1;
    vl3_image view = image_rgb_view(im);
    int rc = unit_prepare(w, u, &view, err);
    if (rc >= 0)
        rc = unit_fits(w, job, u, held, err);
    if (rc < 0) {
        worker_unit_free(w, u);
        return rc;
    }
    if (plan)
        worker_cache_miss(w, job, plan, u);
    stream_count(st, u);
    queue_unit(w, job, u);
    return 0;
}

/* Prepare and queue the windows one at a time. Before preparing each, wait while the budget is
 * full and earlier windows of this job are still queued: the engine consumes them and gives
 * their bytes back, so prepared-but-unconsumed windows stay within memory_budget (passing it by
 * at most one window). held: the budget bytes of the job's sampled frames. */
static int make_units(struct worker *w, struct worker_job *job, const struct sample_result *sr,
                      int64_t held, struct stream_stats *st, struct worker_cache_plan *plan,
                      vl3_error *err)
{
    int rc = 0;
    vl3_image *imgs = calloc(sr->n ? sr->n : 1, sizeof(*imgs));
    if (!imgs)
        return vl3_error_set(err, -ENOMEM, "out of memory");
    for (int win = 0; win < sr->n_windows; win++) {
        if ((rc = worker_budget_wait_room(&w->budget, &job->queued_bytes)) < 0) {
            vl3_error_set(err, rc, "worker stopping");
            break;
        }
        pthread_mutex_lock(&w->lock);
        int failed = worker_job_overdue_locked(w, job, vl3_time_ns()); /* or failed otherwise */
        pthread_mutex_unlock(&w->lock);
        if (failed)
            break;
        struct worker_unit *u = calloc(1, sizeof(*u));
        int n = u ? pipeline_window_frames(sr, win, imgs, &u->pw) : -ENOMEM;
        if (n < 0) {
            free(u);
            rc = vl3_error_set(err, -ENOMEM, "out of memory");
            break;
        }
        if (n == 0) { /* a window without frames has nothing to answer */
            free(u);
            continue;
        }
        u->job = job;
        if (plan && win < plan->n && plan->hit[win]) { /* token cache hit: no preprocessing */
            worker_unit_free(w, u);
            if ((rc = worker_cache_unit(w, job, plan, win, &u)) < 0) {
                rc = vl3_error_set(err, rc, "out of memory");
                break;
            }
            stream_count(st, u);
            queue_unit(w, job, u);
            continue;
        }
        pipeline_window_span(&u->pw, &job->sp);
        if ((rc = unit_prepare(w, u, imgs, err)) < 0 ||
            (rc = unit_fits(w, job, u, held, err)) < 0) {
            worker_unit_free(w, u);
            break;
        }
        if (plan)
            worker_cache_miss(w, job, plan, u);
        stream_count(st, u);
        queue_unit(w, job, u);
    }
    free(imgs);
    return rc;
}

/* Refuse, before anything is decoded, a job whose sampling would exceed the per-job bounds:
 * windows (media.max_windows), answers = windows x tasks (media.max_answers) and sampled frames
 * of all windows together (media.max_frames). A 162-byte job asking for 25 fps in windows of
 * 0.04 s on a 2-hour clip would otherwise prepare 180,000 windows. Needs the duration; inputs
 * without one are bounded per window and by media.max_decoded_frames. The frames of all windows
 * (media.max_frames) are counted exactly by the sampling plan, before the decode pass. */
static int check_job_bounds(const struct worker_conf *c, const struct media_info *mi,
                            const struct worker_job *job, vl3_error *err)
{
    if (mi->is_image || mi->duration_us == MEDIA_NOPTS || mi->duration_us <= 0)
        return 0;
    const struct sample_params *sp = &job->sp;
    double dur = (double)mi->duration_us / 1e6;
    double windows = sp->window_s > 0 ? ceil(dur / sp->window_s) : 1;
    double answers = windows * job->ntasks;
    if (windows > (double)c->max_windows)
        return vl3_error_set(err, VL3_E_LIMIT, "the job would make %.0f windows of %.3g s over "
                             "%.1f s, above media.max_windows %lld", windows, sp->window_s, dur,
                             (long long)c->max_windows);
    if (answers > (double)c->max_answers)
        return vl3_error_set(err, VL3_E_LIMIT, "the job would give %.0f answers (%.0f windows x "
                             "%d tasks), above media.max_answers %lld", answers, windows,
                             job->ntasks, (long long)c->max_answers);
    return 0; /* frames over all windows: counted exactly by sampling's plan (max_total) */
}

/* The pipeline's fingerprint callback: memoized per file version (worker_cache.c). */
static int fingerprint(void *user, const char *path, int fd, const struct stat *st,
                       char ret[TCACHE_FINGERPRINT_LEN])
{
    return worker_cache_fingerprint(user, path, fd, st, ret);
}

static int run_job(struct worker *w, struct worker_job *job, struct stream_stats *st,
                   vl3_error *err)
{
    const struct worker_conf *c = w->conf;
    int rc;
    media_input *m = NULL;
    struct sample_result *sr = NULL;
    int64_t reserved = 0;
    struct worker_cache_plan plan = {0};
    uint64_t t0 = vl3_time_ns();
    struct stat st_;
    int have_stat = 0;
    char fp[TCACHE_FINGERPRINT_LEN] = "";
    int want_fp = w->tcache && job->cache != WORKER_CACHE_OFF;
    struct media_policy pol;
    media_conf_policy(c, &pol);
    /* decoding ends by the job's time limit too */
    int64_t left_ms = c->max_wall_ms - (int64_t)((vl3_time_ns() - job->t_received_ns) / 1000000);
    if (left_ms < 1)
        left_ms = 1;
    if (pol.decode_timeout_ms <= 0 || pol.decode_timeout_ms > left_ms)
        pol.decode_timeout_ms = left_ms;
    /* the pipeline's first step: open under the roots, fingerprint, hand to FFmpeg */
    if ((rc = pipeline_open(c->roots, job->input, &pol, fingerprint, w, want_fp ? fp : NULL,
                            &st_, &have_stat, &m, err)) < 0)
        return rc;
    int use_cache = want_fp && have_stat && fp[0];
    const struct media_info *mi = media_get_info(m);
    if (have_stat) {
        struct worker_media *md = &job->media;
        *md = (struct worker_media){.present = 1, .size = st_.st_size, .mtime_s = st_.st_mtime,
                                    .width = mi->width, .height = mi->height};
        if (!mi->is_image && mi->duration_us != MEDIA_NOPTS && mi->duration_us > 0)
            md->duration_s = (double)mi->duration_us / 1e6;
        if (!mi->is_image && mi->fps_num > 0 && mi->fps_den > 0)
            md->fps = (double)mi->fps_num / mi->fps_den;
        snprintf(md->codec, sizeof(md->codec), "%s", mi->codec);
        if (use_cache)
            snprintf(md->fingerprint, sizeof(md->fingerprint), "%s", fp);
    }
    int is_image = mi->is_image;
    if ((rc = check_job_bounds(c, mi, job, err)) < 0)
        goto out;
    if (use_cache && worker_cache_plan(w, job, fp, is_image, &plan) < 0)
        use_cache = 0;
    if (use_cache && worker_cache_plan_complete(&plan)) {
        /* every window is cached: nothing to decode; the windows stream through the budget as
         * decoded ones do (their rows are reserved) */
        for (int i = 0; i < plan.n_windows; i++) {
            if ((rc = worker_budget_wait_room(&w->budget, &job->queued_bytes)) < 0) {
                vl3_error_set(err, rc, "worker stopping");
                goto out;
            }
            pthread_mutex_lock(&w->lock);
            int failed = worker_job_overdue_locked(w, job, vl3_time_ns());
            pthread_mutex_unlock(&w->lock);
            if (failed)
                goto out;
            struct worker_unit *u = NULL;
            if ((rc = worker_cache_unit(w, job, &plan, plan.windows[i], &u)) < 0) {
                rc = vl3_error_set(err, rc, "out of memory");
                goto out;
            }
            stream_count(st, u);
            queue_unit(w, job, u);
        }
        job->decode_ms = (double)(vl3_time_ns() - t0) / 1e6;
        vl3_log_info("cached job=%s windows=%d window_bytes_max=%lld window_bytes_sum=%lld "
                     "budget_peak=%lld memory_budget=%lld cache_bytes=%lld",
                     job->id, st->units, (long long)st->max_bytes, (long long)st->sum_bytes,
                     (long long)worker_budget_peak(&w->budget), (long long)w->budget.total,
                     (long long)plan.charged_sum);
        goto out;
    }
    /* the decoded RGB pictures; each window's pixel values are charged as it is prepared */
    int64_t need = is_image ? (int64_t)mi->width * mi->height * 3 : estimate_bytes(mi, &job->sp);
    worker_cache_plan_charge(&plan, 0);
    rc = worker_budget_reserve(&w->budget, need, err);
    worker_cache_plan_charge(&plan, 1);
    if (rc < 0)
        goto out;
    reserved = need;
    if (is_image) {
        image_rgb im = {0};
        if ((rc = pipeline_read_image(&w->pl, m, &im, err)) < 0)
            goto out;
        job->frames_decoded = 1;
        job->decode_ms = (double)(vl3_time_ns() - t0) / 1e6;
        media_close(m);
        m = NULL;
        rc = make_image_unit(w, job, &im, reserved, st, use_cache ? &plan : NULL, err);
        image_rgb_free(&im);
    } else {
        if ((rc = sample_video(m, &job->sp, &sr, err)) < 0)
            goto out;
        job->frames_decoded = sr->frames_decoded;
        job->decode_ms = (double)(vl3_time_ns() - t0) / 1e6;
        media_close(m);
        m = NULL;
        rc = make_units(w, job, sr, reserved, st, use_cache ? &plan : NULL, err);
        if (rc == 0 && use_cache && !st->wins_lost)
            worker_cache_store_windows(w, job, &plan, st->wins, st->n_wins);
    }
    if (rc < 0)
        goto out;
    vl3_log_info("decoded job=%s frames=%zu windows=%d decoded=%lld ms=%.1f window_bytes_max=%lld "
                 "window_bytes_sum=%lld budget_peak=%lld memory_budget=%lld",
                 job->id, sr ? sr->n : 1, st->units, (long long)job->frames_decoded,
                 job->decode_ms, (long long)st->max_bytes, (long long)st->sum_bytes,
                 (long long)worker_budget_peak(&w->budget), (long long)w->budget.total);
out:
    worker_cache_plan_free(&plan);
    worker_budget_release(&w->budget, reserved);
    sample_result_free(sr);
    media_close(m);
    return rc;
}

void *worker_decode_main(void *arg)
{
    struct worker *w = arg;
    struct worker_job *job;
    while ((job = next_job(w))) {
        vl3_error err = {0};
        struct stream_stats st = {0};
        (void)worker_send_progress(&w->out, job->id, "decode", 0, 1);
        int rc = run_job(w, job, &st, &err);
        free(st.wins);
        pthread_mutex_lock(&w->lock);
        w->decoding--;
        (void)worker_job_overdue_locked(w, job, vl3_time_ns()); /* its reason wins */
        if (rc < 0) {
            worker_job_fail_locked(job, rc, &err);
        } else if (st.units == 0 && !job->rc) {
            vl3_error_set(&err, VL3_E_DECODE, "no frames sampled from \"%s\"", job->input);
            worker_job_fail_locked(job, VL3_E_DECODE, &err);
        }
        pthread_cond_signal(&w->cond_engine);
        worker_job_unref_locked(w, job); /* the decode stage's reference */
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}
