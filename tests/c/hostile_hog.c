/* Hostile filler (written for the tests): holds 400 MB around the allocator, then spins. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern void *mmap(void *, unsigned long, int, int, int, long);
    extern void *memset(void *, int, unsigned long);
    unsigned long n = 400UL << 20;
    char *volatile p = mmap(0, n, 3, 0x22, -1, 0);

    if ( p != (char *)-1 )
        memset(p, 1, n);
    for ( ;; )
        if ( p[mfn_x(mfn)] == 2 )
            break;
    return mfn_x(mfn) != 0;
}
