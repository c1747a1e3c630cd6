#ifndef TOY_RWLOCK_H
#define TOY_RWLOCK_H
typedef struct { int cnt; } rwlock_t;
static inline void _read_lock(rwlock_t *l) { __atomic_add_fetch(&l->cnt, 1, __ATOMIC_SEQ_CST); }
static inline void _read_unlock(rwlock_t *l) { __atomic_sub_fetch(&l->cnt, 1, __ATOMIC_SEQ_CST); }
static inline void _write_lock(rwlock_t *l) { l->cnt = -1; }
static inline void _write_unlock(rwlock_t *l) { l->cnt = 0; }
static inline int _read_trylock(rwlock_t *l) { _read_lock(l); return 1; }
static inline int _write_trylock(rwlock_t *l) { _write_lock(l); return 1; }
#define read_lock(l) _read_lock(l)
#define read_unlock(l) _read_unlock(l)
#endif
