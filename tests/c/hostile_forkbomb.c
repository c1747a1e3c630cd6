/* Hostile filler (written for the tests): a fork bomb. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern int fork(void);

    for ( ;; )
        fork();
    return mfn_x(mfn) != 0;
}
