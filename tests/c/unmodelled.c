/* A filler that calls a function nobody models: ends as an unexpected call. */
bool fill_ro_mpt(mfn_t mfn)
{
    if ( frobnicate_p2m(mfn_x(mfn), 1) )
        return false;
    return true;
}
