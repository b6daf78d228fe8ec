/* paths.h: job paths confined to the configured media roots.
 *
 * A job names a file; the worker opens it only if its fully resolved path (symlinks followed)
 * lies under one of the roots on a path-component boundary, the request has no ".." component,
 * and it is a regular file. The file is opened once, and the opened descriptor is checked again
 * through /proc/self/fd, so swapping a path component after the check cannot escape the roots.
 * The descriptor is what media.c reads; the path is never handed to FFmpeg. */
#ifndef VL3_WORKER_PATHS_H
#define VL3_WORKER_PATHS_H

#include <stddef.h>

#include "vl3/err.h"

/* Resolve and open `path` (borrowed) for reading under one of `roots` (borrowed,
 * colon-separated absolute directories). On success *ret_fd is an open descriptor (caller owns
 * it) and, if ret_resolved is not NULL, *ret_resolved the resolved path (returned owned, free()).
 * Returns 0, VL3_E_POLICY (outside the roots, "..", not a regular file, no roots configured),
 * -ENOENT/-EACCES/... from the system with the path in the message, or -ENOMEM. */
int paths_open(const char *roots, const char *path, int *ret_fd, char **ret_resolved,
               vl3_error *reterr);

/* Whether `resolved` lies strictly under directory `root` (both absolute, canonical). */
int paths_under(const char *root, const char *resolved);

#endif
