/* xen-verify overlay (not Xen code): domain references recorded (the tree's static
 * inline get_domain/put_domain still run; a macro does not expand inside itself). */
#include_next <xen/sched.h>
#ifndef XV_OVERLAY_SCHED_H
#define XV_OVERLAY_SCHED_H
#include "xv_hooks.h"
#define get_domain(d) ({ __typeof__(get_domain(d)) xv_r_ = get_domain(d); \
    xv_hook("get_domain", (unsigned long)(d), xv_r_); xv_r_; })
#define put_domain(d) ({ xv_hook("put_domain", (unsigned long)(d), 0); put_domain(d); })
#define get_knownalive_domain(d) ({ xv_hook("get_knownalive_domain", (unsigned long)(d), 0); \
    get_knownalive_domain(d); })
#endif
/* preemption is a driver choice (a macro in some eras, an inline function in others) */
#undef hypercall_preempt_check
#define hypercall_preempt_check() ((int)xv_preempt_check())
