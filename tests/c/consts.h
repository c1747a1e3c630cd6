/* Constants for the failure-class fixtures: made-up values, NOT taken from Xen. */
#define PGT_type_mask (7UL << 61)
#define PGT_l4_page_table (4UL << 61)
#define PGT_locked (1UL << 60)
#define PGT_pinned (1UL << 59)
#define PGT_validated (1UL << 58)
#define PGT_partial (1UL << 56)
#define PGT_count_mask ((1UL << 55) - 1)
#define RO_MPT_VIRT_START (7UL << 39)
#define l4_table_offset(a) (((a) >> 39) & 511)
#define VMASST_TYPE_m2p_strict 32
#define ERESTART 85
#define EINTR 4
