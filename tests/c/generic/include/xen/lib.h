#ifndef TOY_LIB_H
#define TOY_LIB_H
#include <stdbool.h>
#define EINVAL 22
#define ENOMEM 12
#define ENOENT 2
#define NULL ((void *)0)
#define BUG() __asm__ volatile ("ud2")
#define ASSERT(p) do { if (!(p)) BUG(); } while (0)
int printk(const char *fmt, ...);
#endif
