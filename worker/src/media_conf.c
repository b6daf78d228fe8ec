/* media_conf.c: map the worker configuration onto media_policy and sample_params. */
#include "media_conf.h"

void media_conf_policy(const struct worker_conf *c, struct media_policy *pol)
{
    media_policy_default(pol);
    pol->max_file_size = c->max_file_size;
    pol->max_duration_ms = c->max_duration_ms;
    pol->max_pixels = c->max_pixels;
    pol->max_frames = c->max_decoded_frames;
    pol->decode_timeout_ms = c->decode_timeout_ms;
    pol->threads = (int)c->decode_threads;
    pol->max_decode_errors = c->max_decode_errors;
    pol->formats = c->media_formats;
}

void media_conf_sample_params(const struct worker_conf *c, struct sample_params *p)
{
    sample_params_default(p); /* rate, frames and windows come with each job */
    p->max_total = c->max_frames;
    p->max_bytes = c->memory_budget;
    p->mode = c->sample_mode == SAMPLE_MODE_FAST ? SAMPLE_MODE_FAST : SAMPLE_MODE_EXACT;
}
