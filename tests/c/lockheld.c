/* A filler that returns with the domain's page_alloc_lock still held. */
bool fill_ro_mpt(mfn_t mfn)
{
    spin_lock_recursive(&current->domain->page_alloc_lock);
    return mfn_x(mfn) != 0;
}
