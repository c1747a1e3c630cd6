/* A filler that never returns: the harness must report a hang, not wait for ever. */
bool fill_ro_mpt(mfn_t mfn)
{
    volatile unsigned long n = mfn_x(mfn) + 1;

    while ( n )
        n |= 1;
    return false;
}
