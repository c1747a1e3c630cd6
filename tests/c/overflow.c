/* A filler that writes past the end of a stack array: ASan reports it. */
bool fill_ro_mpt(mfn_t mfn)
{
    volatile unsigned long tab[4];
    volatile unsigned long i = mfn_x(mfn) + 4;

    tab[i] = 1;
    return tab[0] != 0;
}
