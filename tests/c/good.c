/* A well-behaved filler in the shape of the fixed one (written for the tests). */
bool fill_ro_mpt(mfn_t mfn)
{
    l4_pgentry_t *t = map_domain_page(mfn);
    bool filled = !l4e_get_intpte(t[l4_table_offset(RO_MPT_VIRT_START)]);

    if ( filled )
        t[l4_table_offset(RO_MPT_VIRT_START)] =
            idle_pg_table[l4_table_offset(RO_MPT_VIRT_START)];
    unmap_domain_page(t);
    return filled;
}
