/* xen-verify overlay (not Xen code): RCU read-side sections recorded by lock. */
#include_next <xen/rcupdate.h>
#ifndef XV_OVERLAY_RCUPDATE_H
#define XV_OVERLAY_RCUPDATE_H
#include "xv_hooks.h"
#undef rcu_read_lock
#define rcu_read_lock(x) ({ xv_hook("rcu_read_lock", (unsigned long)(x), 0); })
#undef rcu_read_unlock
#define rcu_read_unlock(x) ({ xv_hook("rcu_read_unlock", (unsigned long)(x), 0); })
#endif
