/* Made-up unit for the generic-mode mechanics (not Xen code). Each function has a
 * balanced form and, with -DBUGGY, the resource slip a real fix would remove. */
#include <xen/mm.h>
#include <xen/sched.h>

int take_two(struct domain *d, unsigned long mfn)
{
    struct page_info *pg = mfn_to_page(mfn);
    spin_lock(&d->lock);
    if ( !get_page(pg, d) )
    {
#ifndef BUGGY
        spin_unlock(&d->lock);
#endif
        return -EINVAL;
    }
    put_page(pg);
    spin_unlock(&d->lock);
    return 0;
}

/* Returns holding d->lock on success by design (the contract learnt from base). */
int lock_if_ready(struct domain *d)
{
    if ( !spin_trylock(&d->lock) )
        return -ENOENT;
    return 0;
}

int mapper(struct domain *d, unsigned long mfn)
{
    char *va = map_domain_page(mfn);
    int rc = 0;
    read_lock(&d->rw);
    if ( !get_page(mfn_to_page(mfn), d) )
        rc = -EINVAL;
    else
        put_page(mfn_to_page(mfn));
    va[1] = va[0];
    read_unlock(&d->rw);
#ifdef BUGGY
    if ( rc )
        return rc;
#endif
    unmap_domain_page(va);
    return rc;
}

int uses_current(void)
{
    struct domain *d = current->domain;
    void *p = _xmalloc(64, 8);
    if ( !p )
        return -ENOMEM;
    if ( d->domain_id )
        BUG();
    xfree(p);
    return 0;
}

int double_take(struct domain *d)
{
    spin_lock(&d->lock);
#ifdef BUGGY
    spin_lock(&d->lock);
#endif
    spin_unlock(&d->lock);
    return 0;
}

/* A modelled function the unit defines itself: its callers here see a stub. */
int page_lock(struct page_info *pg)
{
    return pg->count_info != 0;
}

void page_unlock(struct page_info *pg)
{
    (void)pg;
}

int locks_page(unsigned long mfn)
{
    struct page_info *pg = mfn_to_page(mfn);
    if ( !page_lock(pg) )
        return -EINVAL;
#ifndef BUGGY
    page_unlock(pg);
#endif
    return 0;
}

/* Indexes its argument as a table: slot 300 lies past a small object, within a page. */
void fill_table(unsigned long *table, unsigned long slot_value)
{
    table[300] = slot_value;
    table[511] = slot_value;
}

/* Writes past a buffer of its own: an overrun in the code, not in the harness state. */
int overruns_own(unsigned int n)
{
    volatile char buf[16];
    buf[n + 16] = 1;
    return buf[0];
}

/* Writes past even a page-sized argument: the harness's guess at its size, not judged. */
void beyond_a_page(unsigned long *table)
{
    table[4096] = 1;
}

/* A branch on global data alone: zero-filled, the two globals agree and the error
 * path never runs; the explorer's global states take it. */
extern unsigned int nr_things;
static unsigned int leader;

int global_gate(struct domain *d)
{
    spin_lock(&d->lock);
    if ( nr_things != leader )
    {
#ifndef BUGGY
        spin_unlock(&d->lock);
#endif
        return -ENOENT;
    }
    spin_unlock(&d->lock);
    return 0;
}

/* A fresh domain has no bitmap (allocate it); a live one has (use it). */
int bitmap_user(struct domain *d)
{
    void *p;
    if ( !d->dirty_bitmap )
        return -ENOMEM;
    p = _xmalloc(16, 8);
    if ( !p )
        return -ENOMEM;
    if ( d->dirty_bitmap[3] == 0 )
    {
#ifndef BUGGY
        xfree(p);
#endif
        return -ENOENT;
    }
    xfree(p);
    return 0;
}

/* UBSan alone (a shift by a count the zeroed state makes negative): not judged. */
int shifts_by_state(struct domain *d, unsigned long gfn)
{
    return !(gfn >> (d->domain_id - 12));
}

/* Overruns an object a stub returned: the tree's own doing, judged. */
int overruns_allocation(void)
{
    volatile char *p = _xmalloc(16, 8);
    if ( !p )
        return -ENOMEM;
    p[100] = 1;
    xfree((void *)p);
    return 0;
}

/* Reads a table in .rodata: no global state may write it. */
static const unsigned long limits_table[4] = { 1, 2, 3, 4 };
extern unsigned int nr_limits;

int reads_const_table(unsigned int i)
{
    return limits_table[i & 3] > nr_limits ? -ENOENT : 0;
}
