/* Hostile filler (written for the tests): a 20 GB allocation, touched. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern void *malloc(unsigned long);
    extern void *memset(void *, int, unsigned long);
    unsigned long n = 20UL << 30;
    char *volatile p = malloc(n);

    if ( p )
        memset(p, 1, n);
    return p && p != (char *)-1 && p[n / 2] == 1 && mfn_x(mfn) != 0;
}
