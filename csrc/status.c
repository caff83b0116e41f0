/* status.c -- maas_status messages (thread-local), checked size arithmetic,
 * aligned allocation. */
#include "maas.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[512];

maas_status maas_error(maas_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *maas_last_error(void) { return err_msg[0] ? err_msg : "unknown error"; }

void maas_clear_error(void) { err_msg[0] = '\0'; }

int maas_mul_size(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return -1;
    if (a != 0 && b > INT64_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

int maas_shape_size(int ndim, const int64_t *shape, int64_t *out)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        if (maas_mul_size(n, shape[d], &n) != 0)
            return -1;
    *out = n;
    return 0;
}

/* ---- a small cache of large freed blocks
 *
 * A training step allocates and frees the same large buffers every time
 * (gradients, activations). glibc serves blocks this size with mmap or
 * trims them off the heap top when they are freed, so each step paid page
 * faults on fresh zero pages (15% of a batch-1 dense forward+backward).
 * Freed blocks of at least CACHE_MIN_BYTES are kept here, up to
 * CACHE_SLOTS blocks and CACHE_MAX_BYTES in all, and handed out again for
 * a request of the same (page-rounded) size. Every block carries its size
 * in a 64-byte header in front of the aligned data. */

#define ALIGN 64
#define CACHE_MIN_BYTES ((size_t)64 << 10)
#define CACHE_MAX_BYTES ((size_t)64 << 20)
#define CACHE_SLOTS 16

static struct {
    pthread_mutex_t lock;
    void *block[CACHE_SLOTS];
    size_t size[CACHE_SLOTS];
    size_t total;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *cache_take(size_t sz)
{
    void *p = NULL;
    pthread_mutex_lock(&cache.lock);
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (cache.block[i] && cache.size[i] == sz) {
            p = cache.block[i];
            cache.block[i] = NULL;
            cache.total -= sz;
            break;
        }
    pthread_mutex_unlock(&cache.lock);
    return p;
}

/* 1 when the cache kept the block. */
static int cache_put(void *block, size_t sz)
{
    int kept = 0;
    pthread_mutex_lock(&cache.lock);
    if (cache.total + sz <= CACHE_MAX_BYTES)
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (!cache.block[i]) {
                cache.block[i] = block;
                cache.size[i] = sz;
                cache.total += sz;
                kept = 1;
                break;
            }
    pthread_mutex_unlock(&cache.lock);
    return kept;
}

float *maas_alloc_floats(int64_t n)
{
    int64_t bytes;
    /* cap well below SIZE_MAX and round up to the 64-byte alignment */
    if (n < 0 || maas_mul_size(n, (int64_t)sizeof(float), &bytes) != 0 ||
        bytes > (INT64_MAX >> 2)) {
        maas_error(MAAS_ERR_NOMEM, "cannot allocate %lld floats: size overflows",
                   (long long)n);
        return NULL;
    }
    size_t sz = (size_t)((bytes + 63) & ~(int64_t)63);
    if (sz == 0)
        sz = 64;
    if (sz >= CACHE_MIN_BYTES)
        sz = (sz + 4095) & ~(size_t)4095; /* page-rounded: more cache hits */
    sz += ALIGN; /* the header */
    void *p = sz >= CACHE_MIN_BYTES ? cache_take(sz) : NULL;
    if (!p && (posix_memalign(&p, ALIGN, sz) != 0 || p == NULL)) {
        maas_error(MAAS_ERR_NOMEM, "out of memory allocating %lld bytes",
                   (long long)sz);
        return NULL;
    }
    *(size_t *)p = sz;
    return (float *)((char *)p + ALIGN);
}

void maas_free(void *p)
{
    if (!p)
        return;
    void *block = (char *)p - ALIGN;
    size_t sz = *(size_t *)block;
    if (sz >= CACHE_MIN_BYTES && cache_put(block, sz))
        return;
    free(block);
}
