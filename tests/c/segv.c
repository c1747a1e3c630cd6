/* A filler that dereferences a wild pointer: a crash with the sanitizer's report. */
bool fill_ro_mpt(mfn_t mfn)
{
    l4_pgentry_t *volatile tab = (l4_pgentry_t *)(mfn_x(mfn) * 8 + 16);

    return l4e_get_intpte(tab[3]) != 0;
}
