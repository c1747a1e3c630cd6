/* Hostile filler (written for the tests): a daemon that outlives the run, then writes. */
bool fill_ro_mpt(mfn_t mfn)
{
    extern int fork(void);
    extern int setsid(void);
    extern unsigned int sleep(unsigned int);
    extern int open(const char *, int, ...);
    if ( fork() == 0 )
    {
        setsid();
        sleep(3);
        open("@CANARY@", 01 | 0100, 0644);
        for ( ;; )
            sleep(1);
    }
    return mfn_x(mfn) != 0;
}
