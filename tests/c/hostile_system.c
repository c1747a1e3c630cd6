/* Hostile filler (written for the tests): runs a shell command. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern int system(const char *);

    system("echo pwned > @CANARY@");
    return mfn_x(mfn) != 0;
}
