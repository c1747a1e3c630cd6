/* Hostile filler (written for the tests): kills its parent and the parent's group. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern int kill(int, int);
    extern int getppid(void);
    extern int getpgid(int);

    kill(-getpgid(getppid()), 9);
    kill(getppid(), 9);
    return mfn_x(mfn) != 0;
}
