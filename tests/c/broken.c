/* Does not compile: the error must point at this file and line. */
bool fill_ro_mpt(mfn_t mfn)
{
    return mfn_x(mfn) +;
}
