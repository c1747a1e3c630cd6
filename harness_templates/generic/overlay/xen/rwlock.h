/* xen-verify overlay (not Xen code): the tree's rwlock.h, its static inline fast
 * paths recorded (the real code still runs). */
#include_next <xen/rwlock.h>
#ifndef XV_OVERLAY_RWLOCK_H
#define XV_OVERLAY_RWLOCK_H
#include "xv_hooks.h"
#undef read_lock
#define read_lock(l) ({ xv_hook("read_lock", (unsigned long)(l), 0); _read_lock(l); })
#undef read_unlock
#define read_unlock(l) ({ _read_unlock(l); xv_hook("read_unlock", (unsigned long)(l), 0); })
#undef write_lock
#define write_lock(l) ({ xv_hook("write_lock", (unsigned long)(l), 0); _write_lock(l); })
#undef write_unlock
#define write_unlock(l) ({ _write_unlock(l); xv_hook("write_unlock", (unsigned long)(l), 0); })
#undef read_trylock
#define read_trylock(l) ({ int xv_r_ = _read_trylock(l); \
    xv_hook("read_trylock", (unsigned long)(l), xv_r_); xv_r_; })
#undef write_trylock
#define write_trylock(l) ({ int xv_r_ = _write_trylock(l); \
    xv_hook("write_trylock", (unsigned long)(l), xv_r_); xv_r_; })
#endif
