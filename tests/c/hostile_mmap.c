/* Hostile filler (written for the tests): 20 GB mapped around the allocator, touched. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern void *mmap(void *, unsigned long, int, int, int, long);
    extern void *memset(void *, int, unsigned long);
    unsigned long n = 20UL << 30;
    char *volatile p = mmap(0, n, 3, 0x22 | 0x4000, -1, 0);

    if ( p != (char *)-1 )
        memset(p, 1, n);
    return p && p != (char *)-1 && p[n / 2] == 1 && mfn_x(mfn) != 0;
}
