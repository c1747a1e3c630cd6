/* xen-verify overlay (not Xen code): the tree's asm/config.h, with the kernel-half
 * PML4 slots moved into the user half (slot 256 + n -> slot 64 + n), so the frame
 * table, the directmap and every layout constant derived from them land in the
 * harness arenas. Relations between regions are kept: one slot offset for all. */
#include_next <asm/config.h>
#ifndef XV_OVERLAY_ASM_CONFIG_H
#define XV_OVERLAY_ASM_CONFIG_H
#undef PML4_ADDR
#define PML4_ADDR(_slot) \
    (((((_slot ## UL) + 512UL - 192UL) & 511UL)) << PML4_ENTRY_BITS)
#endif
