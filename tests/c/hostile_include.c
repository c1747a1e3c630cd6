/* Hostile filler (written for the tests): makes gcc read a device. */
bool fill_ro_mpt(mfn_t mfn)
{
#include "/dev/zero"
    return mfn_x(mfn) != 0;
}
