/* notify.c: sd_notify wrappers (libsystemd). Messages are short, one datagram each; errors are
 * ignored on purpose (no notification socket = not started by systemd). */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

void notify_ready(const char *status)
{
    (void)sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "running");
}

void notify_status(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    (void)sd_notifyf(0, "STATUS=%s", buf);
}

void notify_reloading(void)
{
    (void)sd_notify(0, "RELOADING=1");
}

void notify_stopping(void)
{
    (void)sd_notify(0, "STOPPING=1");
}

void notify_watchdog(void)
{
    (void)sd_notify(0, "WATCHDOG=1");
}

uint64_t notify_watchdog_interval_ms(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        return usec / 2000;
    return 0;
}
