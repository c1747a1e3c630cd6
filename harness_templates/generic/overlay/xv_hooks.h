/* xen-verify overlay (not Xen code): declarations shared by the shadow headers. */
#ifndef XV_HOOKS_H
#define XV_HOOKS_H
void xv_hook(const char *name, unsigned long key, unsigned long rc);
unsigned long xv_preempt_check(void);
#endif
