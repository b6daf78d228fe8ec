/* media_conf.h: the worker configuration's media options as media/sample parameters. */
#ifndef VL3_WORKER_MEDIA_CONF_H
#define VL3_WORKER_MEDIA_CONF_H

#include "media.h"
#include "sample.h"
#include "worker_conf.h"

/* Fill *pol from c (borrows c's strings: keep c alive while pol is used). */
void media_conf_policy(const struct worker_conf *c, struct media_policy *pol);
/* Fill *p with the configured default sampling (a job may override fields). */
void media_conf_sample_params(const struct worker_conf *c, struct sample_params *p);

#endif
