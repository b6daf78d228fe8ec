/* paths.c: confine job paths to the media roots (see paths.h). */
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int paths_under(const char *root, const char *resolved)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/')
        n--;
    if (n == 1 && root[0] == '/')
        return resolved[0] == '/' && resolved[1] != '\0';
    return strncmp(root, resolved, n) == 0 && resolved[n] == '/' && resolved[n + 1] != '\0';
}

static int has_dotdot(const char *path)
{
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 1;
        p += n;
        while (*p == '/')
            p++;
    }
    return 0;
}

/* Whether resolved lies under one of the colon-separated roots (each canonicalised). */
static int under_roots(const char *roots, const char *resolved)
{
    const char *p = roots;
    char root[PATH_MAX], canon[PATH_MAX];
    while (*p) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n < sizeof(root)) {
            memcpy(root, p, n);
            root[n] = '\0';
            if (root[0] == '/' && realpath(root, canon) && paths_under(canon, resolved))
                return 1;
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return 0;
}

int paths_open(const char *roots, const char *path, int *ret_fd, char **ret_resolved,
               vl3_error *reterr)
{
    char resolved[PATH_MAX], link[64], actual[PATH_MAX];
    struct stat st;
    int fd = -1, r;

    if (!path || !ret_fd)
        return vl3_error_set(reterr, -EINVAL, "invalid arguments to paths_open");
    if (!roots || !*roots)
        return vl3_error_set(reterr, VL3_E_POLICY, "no media roots are configured (media.roots)");
    if (path[0] != '/')
        return vl3_error_set(reterr, VL3_E_POLICY, "path \"%s\" is not absolute", path);
    if (has_dotdot(path))
        return vl3_error_set(reterr, VL3_E_POLICY, "path \"%s\" contains a \"..\" component",
                             path);
    if (!realpath(path, resolved)) {
        r = -errno;
        return vl3_error_set(reterr, r, "could not resolve \"%s\": %s", path, strerror(-r));
    }
    if (!under_roots(roots, resolved))
        return vl3_error_set(reterr, VL3_E_POLICY,
                             "path \"%s\" resolves to \"%s\", which is outside media.roots",
                             path, resolved);
    /* Open the canonical path, refusing a symlink in its last component (a swap after
     * realpath), and without blocking on FIFOs. */
    fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        if (r == -ELOOP)
            return vl3_error_set(reterr, VL3_E_POLICY, "path \"%s\" changed into a symlink",
                                 path);
        return vl3_error_set(reterr, r, "could not open \"%s\": %s", path, strerror(-r));
    }
    if (fstat(fd, &st) < 0) {
        r = vl3_error_set(reterr, -errno, "could not stat \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        r = vl3_error_set(reterr, VL3_E_POLICY, "path \"%s\" is not a regular file", path);
        goto fail;
    }
    /* What was opened is where the check said: a directory swapped in between is caught. */
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, actual, sizeof(actual) - 1);
    if (n < 0 || (size_t)n >= sizeof(actual) - 1) {
        r = vl3_error_set(reterr, VL3_E_POLICY, "could not verify the opened path of \"%s\"",
                          path);
        goto fail;
    }
    actual[n] = '\0';
    if (strcmp(actual, resolved) != 0 || !under_roots(roots, actual)) {
        r = vl3_error_set(reterr, VL3_E_POLICY, "path \"%s\" moved outside media.roots while "
                          "being opened", path);
        goto fail;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (ret_resolved) {
        *ret_resolved = strdup(resolved);
        if (!*ret_resolved) {
            r = vl3_error_set(reterr, -ENOMEM, "out of memory");
            goto fail;
        }
    }
    *ret_fd = fd;
    return 0;
fail:
    close(fd);
    return r;
}
