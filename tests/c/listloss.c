/* A filler that links a page of d->page_list to itself: the list now cycles. */
bool fill_ro_mpt(mfn_t mfn)
{
    struct page_info *pg = mfn_to_page(mfn);

    pg->list.next = pg;
    return true;
}
