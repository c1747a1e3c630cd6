#ifndef TOY_MM_H
#define TOY_MM_H
#include <xen/lib.h>
struct page_info { unsigned long count_info; unsigned long type_info; };
#define frame_table ((struct page_info *)FRAMETABLE_VIRT_START)
#define mfn_to_page(m) (frame_table + (m))
bool get_page(struct page_info *pg, const void *owner);
void put_page(struct page_info *pg);
void *map_domain_page(unsigned long mfn);
void unmap_domain_page(const void *va);
void *_xmalloc(unsigned long size, unsigned long align);
void xfree(void *p);
int page_lock(struct page_info *pg);
void page_unlock(struct page_info *pg);
#endif
