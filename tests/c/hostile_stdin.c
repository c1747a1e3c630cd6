/* Hostile filler (written for the tests): makes gcc read its standard input. */
bool fill_ro_mpt(mfn_t mfn)
{
#include "/dev/stdin"
    return mfn_x(mfn) != 0;
}
