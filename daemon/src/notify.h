/* notify.h: systemd readiness/status notifications (sd_notify; a no-op without NOTIFY_SOCKET).
 * notify_watchdog_usec() says how often WATCHDOG=1 is expected (0 = no watchdog). */
#ifndef VL3D_NOTIFY_H
#define VL3D_NOTIFY_H

#include <stdint.h>

void notify_ready(const char *status);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_reloading(void);
void notify_stopping(void);
void notify_watchdog(void);
/* Half of WATCHDOG_USEC when systemd set a watchdog for us, else 0. */
uint64_t notify_watchdog_interval_ms(void);

#endif
