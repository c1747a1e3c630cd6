/* Hostile filler (written for the tests): creates a file outside the harness. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern int open(const char *, int, ...);
    open("@CANARY@", 01 | 0100, 0644);
    return mfn_x(mfn) != 0;
}
