/* Made-up mini hypervisor headers for the generic-mode fixture tests (not Xen code). */
#ifndef TOY_CONFIG_H
#define TOY_CONFIG_H
#include <asm/config.h>
#endif
