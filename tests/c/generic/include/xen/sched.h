#ifndef TOY_SCHED_H
#define TOY_SCHED_H
#include <xen/lib.h>
#include <xen/rwlock.h>
#include <xen/rcupdate.h>
typedef struct { int held; } spinlock_t;
void _spin_lock(spinlock_t *l);
void _spin_unlock(spinlock_t *l);
int _spin_trylock(spinlock_t *l);
#define spin_lock(l) _spin_lock(l)
#define spin_unlock(l) _spin_unlock(l)
#define spin_trylock(l) _spin_trylock(l)
struct vcpu;
struct domain { int domain_id; spinlock_t lock; rwlock_t rw; struct vcpu *vcpu0;
                unsigned long *dirty_bitmap; };
struct vcpu { int vcpu_id; struct domain *domain; };
struct cpu_info { unsigned long pad[4]; struct vcpu *current_vcpu; unsigned long per_cpu_offset; };
static inline struct cpu_info *get_cpu_info(void)
{
    unsigned long sp;
    __asm__ ("mov %%rsp, %0" : "=r" (sp));
    return (struct cpu_info *)((sp | (STACK_SIZE - 1)) + 1) - 1;
}
#define current (get_cpu_info()->current_vcpu)
static inline int hypercall_preempt_check(void) { return 0; }
#endif
