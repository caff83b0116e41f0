/* format.c -- the model file: the safetensors layout, read and written here.
 *
 *   [8 bytes: header length H, little-endian u64]
 *   [H bytes: JSON header, UTF-8]
 *   [data section: raw little-endian tensor bytes]
 *
 * The header is an object mapping each tensor name to
 * {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets
 * relative to the data section; the dtypes maas reads and writes are F32,
 * I32, I64, I8, U8 and BOOL, safetensors's names for maas's dtypes) plus an optional "__metadata__" object of
 * string -> string. The writer pads the header with spaces so that the data
 * section starts 64-byte aligned, which the format allows.
 *
 * A file is untrusted input. The reader checks everything before it trusts
 * it, with a small strict JSON parser written for exactly this schema (it
 * has no recursion, so no nesting can exhaust the stack), and allocates at
 * most the header twice over plus one small record per tensor (and, with
 * copying, the data itself).
 */
#include "maas.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define MAAS_BIG_ENDIAN 1
#else
#define MAAS_BIG_ENDIAN 0
#endif

static _Thread_local int st_errno;

/* safetensors's dtype names, by maas_dtype */
static const char *const st_dtype_names[MAAS_DTYPE_COUNT] = {
    [MAAS_F32] = "F32", [MAAS_I32] = "I32", [MAAS_I64] = "I64",
    [MAAS_I8] = "I8",   [MAAS_U8] = "U8",   [MAAS_BOOL] = "BOOL",
};

int maas_st_last_errno(void) { return st_errno; }

/* ------------------------------------------------------------ messages */

/* Writes s[0..n) as printable ASCII (others as \xNN), at most ~60 chars. */
static const char *printable(const char *s, size_t n, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0, i;
    for (i = 0; i < n && k + 8 < cap && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            buf[k++] = (char)c;
        } else {
            buf[k++] = '\\';
            buf[k++] = 'x';
            buf[k++] = hex[c >> 4];
            buf[k++] = hex[c & 15];
        }
    }
    if (i < n && k + 4 < cap) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

static maas_status io_error(const char *what, const char *path)
{
    char p[300];
    st_errno = errno;
    return maas_error(MAAS_ERR_IO, "%s '%s': %s", what, printable(path, strlen(path), p, sizeof p),
                      strerror(st_errno));
}

/* --------------------------------------------------------------- UTF-8 */

/* The offset of the first byte that is not part of valid UTF-8, or n. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F; /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (n - i <= need)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return n;
}

/* ---------------------------------------------------------- JSON parser */

typedef struct {
    const unsigned char *buf;
    size_t len, pos;
    char *arena;        /* decoded strings; capacity len + 1 always suffices */
    size_t arena_used;
} jp;

typedef struct {
    const char *s;
    size_t n;
} strref;

static maas_status jp_fail(const jp *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static maas_status jp_fail(const jp *p, const char *fmt, ...)
{
    char m[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return maas_error(MAAS_ERR_FORMAT, "the header is not valid JSON: %s at byte %zu of the header",
                      m, p->pos);
}

static void jp_ws(jp *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->buf[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int jp_peek(const jp *p) { return p->pos < p->len ? p->buf[p->pos] : -1; }

static maas_status jp_expect(jp *p, char c)
{
    jp_ws(p);
    if (jp_peek(p) != (unsigned char)c)
        return p->pos < p->len ? jp_fail(p, "expected '%c'", c) : jp_fail(p, "expected '%c' but the header ends", c);
    p->pos++;
    jp_ws(p);
    return MAAS_OK;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static maas_status jp_hex4(jp *p, unsigned *out)
{
    if (p->len - p->pos < 4)
        return jp_fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->buf[p->pos + k]);
        if (h < 0)
            return jp_fail(p, "invalid \\u escape");
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return MAAS_OK;
}

/* A string, decoded into the arena (NUL-terminated; its length in *n). The
 * input was checked to be UTF-8 already. */
static maas_status jp_string(jp *p, const char **out, size_t *n)
{
    if (jp_peek(p) != '"')
        return p->pos < p->len ? jp_fail(p, "expected a string") : jp_fail(p, "expected a string but the header ends");
    p->pos++;
    char *dst = p->arena + p->arena_used;
    size_t k = 0;
    for (;;) {
        if (p->pos >= p->len)
            return jp_fail(p, "unterminated string");
        unsigned char c = p->buf[p->pos++];
        if (c == '"')
            break;
        if (c < 0x20)
            return jp_fail(p, "control character 0x%02x in a string", c);
        if (c != '\\') {
            dst[k++] = (char)c;
            continue;
        }
        if (p->pos >= p->len)
            return jp_fail(p, "unterminated string");
        c = p->buf[p->pos++];
        switch (c) {
        case '"': dst[k++] = '"'; break;
        case '\\': dst[k++] = '\\'; break;
        case '/': dst[k++] = '/'; break;
        case 'b': dst[k++] = '\b'; break;
        case 'f': dst[k++] = '\f'; break;
        case 'n': dst[k++] = '\n'; break;
        case 'r': dst[k++] = '\r'; break;
        case 't': dst[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            maas_status s = jp_hex4(p, &cp);
            if (s != MAAS_OK)
                return s;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return jp_fail(p, "unpaired surrogate \\u%04x", cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 2 || p->buf[p->pos] != '\\' || p->buf[p->pos + 1] != 'u')
                    return jp_fail(p, "unpaired surrogate \\u%04x", cp);
                p->pos += 2;
                if ((s = jp_hex4(p, &lo)) != MAAS_OK)
                    return s;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return jp_fail(p, "unpaired surrogate \\u%04x", cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                dst[k++] = (char)cp;
            } else if (cp < 0x800) {
                dst[k++] = (char)(0xC0 | (cp >> 6));
                dst[k++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                dst[k++] = (char)(0xE0 | (cp >> 12));
                dst[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                dst[k++] = (char)(0x80 | (cp & 0x3F));
            } else {
                dst[k++] = (char)(0xF0 | (cp >> 18));
                dst[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                dst[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                dst[k++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            p->pos--;
            return jp_fail(p, "invalid escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
        }
    }
    /* decoded + NUL <= raw length including both quotes - 1 */
    dst[k] = '\0';
    p->arena_used += k + 1;
    *out = dst;
    *n = k;
    return MAAS_OK;
}

/* A non-negative integer without fraction or exponent, fitting in int64. */
static maas_status jp_uint(jp *p, int64_t *out, const char *what)
{
    int c = jp_peek(p);
    if (c == '-')
        return jp_fail(p, "%s must be a non-negative integer", what);
    if (c < '0' || c > '9')
        return jp_fail(p, "%s must be a non-negative integer", what);
    if (c == '0' && p->pos + 1 < p->len && p->buf[p->pos + 1] >= '0' && p->buf[p->pos + 1] <= '9')
        return jp_fail(p, "%s has a leading zero", what);
    int64_t v = 0;
    while (p->pos < p->len && p->buf[p->pos] >= '0' && p->buf[p->pos] <= '9') {
        int d = p->buf[p->pos] - '0';
        if (v > (INT64_MAX - d) / 10)
            return jp_fail(p, "%s is too large", what);
        v = v * 10 + d;
        p->pos++;
    }
    c = jp_peek(p);
    if (c == '.' || c == 'e' || c == 'E')
        return jp_fail(p, "%s must be an integer", what);
    *out = v;
    return MAAS_OK;
}

static int key_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

static int cmp_strref(const void *a, const void *b)
{
    const strref *x = a, *y = b;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, m);
    if (c)
        return c;
    return x->n < y->n ? -1 : x->n > y->n;
}

/* Grows *arr (of *cap elements of `size` bytes) to hold at least need. */
static maas_status grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return MAAS_OK;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / size)
            return maas_error(MAAS_ERR_NOMEM, "too many entries");
        nc *= 2;
    }
    void *q = realloc(*arr, nc * size);
    if (!q)
        return maas_error(MAAS_ERR_NOMEM, "out of memory reading a safetensors header");
    *arr = q;
    *cap = nc;
    return MAAS_OK;
}

/* The "__metadata__" object: string -> string, no duplicate keys. */
static maas_status parse_metadata(jp *p)
{
    maas_status s;
    strref *keys = NULL;
    size_t nkeys = 0, cap = 0;
    if ((s = jp_expect(p, '{')) != MAAS_OK)
        return s;
    if (jp_peek(p) == '}') {
        p->pos++;
        return MAAS_OK;
    }
    for (;;) {
        const char *k, *v;
        size_t kn, vn;
        if ((s = jp_string(p, &k, &kn)) != MAAS_OK)
            goto out;
        if ((s = jp_expect(p, ':')) != MAAS_OK)
            goto out;
        if (jp_peek(p) != '"') {
            char b[100];
            s = jp_fail(p, "the __metadata__ value of '%s' must be a string",
                        printable(k, kn, b, sizeof b));
            goto out;
        }
        if ((s = jp_string(p, &v, &vn)) != MAAS_OK)
            goto out;
        if ((s = grow((void **)&keys, &cap, nkeys + 1, sizeof *keys)) != MAAS_OK)
            goto out;
        keys[nkeys].s = k;
        keys[nkeys].n = kn;
        nkeys++;
        jp_ws(p);
        int c = jp_peek(p);
        if (c == ',') {
            p->pos++;
            jp_ws(p);
            continue;
        }
        if (c == '}') {
            p->pos++;
            break;
        }
        s = jp_fail(p, "expected ',' or '}' in __metadata__");
        goto out;
    }
    qsort(keys, nkeys, sizeof *keys, cmp_strref);
    for (size_t i = 1; i < nkeys; i++)
        if (cmp_strref(&keys[i - 1], &keys[i]) == 0) {
            char b[100];
            s = maas_error(MAAS_ERR_FORMAT, "the header's __metadata__ has the key '%s' twice",
                           printable(keys[i].s, keys[i].n, b, sizeof b));
            goto out;
        }
out:
    free(keys);
    return s;
}

/* One tensor's entry: {"dtype": str, "shape": [int...], "data_offsets": [int, int]}. */
static maas_status parse_tensor(jp *p, maas_st_info *e)
{
    maas_status s;
    char nb[100], kb[100];
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    const char *what = printable(e->name, e->name_len, nb, sizeof nb);
    if (jp_peek(p) != '{')
        return jp_fail(p, "the entry of tensor '%s' must be an object", what);
    if ((s = jp_expect(p, '{')) != MAAS_OK)
        return s;
    if (jp_peek(p) == '}') {
        p->pos++;
        return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has no dtype, shape and data_offsets", what);
    }
    for (;;) {
        const char *k;
        size_t kn;
        if ((s = jp_string(p, &k, &kn)) != MAAS_OK)
            return s;
        if ((s = jp_expect(p, ':')) != MAAS_OK)
            return s;
        if (key_is(k, kn, "dtype")) {
            if (have_dtype++)
                return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has the key 'dtype' twice", what);
            if (jp_peek(p) != '"')
                return jp_fail(p, "the dtype of tensor '%s' must be a string", what);
            if ((s = jp_string(p, &e->dtype, &e->dtype_len)) != MAAS_OK)
                return s;
        } else if (key_is(k, kn, "shape")) {
            if (have_shape++)
                return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has the key 'shape' twice", what);
            if (jp_peek(p) != '[')
                return jp_fail(p, "the shape of tensor '%s' must be an array of integers", what);
            if ((s = jp_expect(p, '[')) != MAAS_OK)
                return s;
            e->ndim = 0;
            if (jp_peek(p) == ']')
                p->pos++;
            else
                for (;;) {
                    if (e->ndim == MAAS_MAX_DIMS)
                        return maas_error(MAAS_ERR_FORMAT,
                                          "tensor '%s' has more than %d dimensions, the most maas supports",
                                          what, MAAS_MAX_DIMS);
                    if ((s = jp_uint(p, &e->shape[e->ndim], "a shape dimension")) != MAAS_OK)
                        return s;
                    e->ndim++;
                    jp_ws(p);
                    int c = jp_peek(p);
                    if (c == ']') {
                        p->pos++;
                        break;
                    }
                    if (c != ',')
                        return jp_fail(p, "expected ',' or ']' in the shape of tensor '%s'", what);
                    p->pos++;
                    jp_ws(p);
                }
        } else if (key_is(k, kn, "data_offsets")) {
            if (have_offsets++)
                return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has the key 'data_offsets' twice", what);
            if (jp_peek(p) != '[')
                return jp_fail(p, "the data_offsets of tensor '%s' must be an array of two integers", what);
            if ((s = jp_expect(p, '[')) != MAAS_OK ||
                (s = jp_uint(p, &e->begin, "a data offset")) != MAAS_OK ||
                (s = jp_expect(p, ',')) != MAAS_OK ||
                (s = jp_uint(p, &e->end, "a data offset")) != MAAS_OK)
                return s;
            jp_ws(p);
            if (jp_peek(p) != ']')
                return jp_fail(p, "the data_offsets of tensor '%s' must be exactly two integers", what);
            p->pos++;
        } else {
            return maas_error(MAAS_ERR_FORMAT,
                              "tensor '%s' has an unknown key '%s' (expected dtype, shape, data_offsets)",
                              what, printable(k, kn, kb, sizeof kb));
        }
        jp_ws(p);
        int c = jp_peek(p);
        if (c == ',') {
            p->pos++;
            jp_ws(p);
            continue;
        }
        if (c == '}') {
            p->pos++;
            break;
        }
        return jp_fail(p, "expected ',' or '}' in the entry of tensor '%s'", what);
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has no '%s'", what,
                          !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return MAAS_OK;
}

typedef struct {
    maas_st_info *entries;
    int64_t n;
    size_t cap;
    char *arena;
    int has_meta;
    size_t meta_start, meta_end; /* the raw __metadata__ object in the header */
} header;

static void header_free(header *h)
{
    free(h->entries);
    free(h->arena);
    memset(h, 0, sizeof *h);
}

/* Parses and checks the JSON of the header (syntax, schema, duplicates). */
static maas_status parse_header(const unsigned char *buf, size_t len, header *h)
{
    maas_status s;
    memset(h, 0, sizeof *h);
    size_t bad = utf8_invalid_at(buf, len);
    if (bad != len)
        return maas_error(MAAS_ERR_FORMAT, "the header is not valid UTF-8 (byte %zu)", bad);
    if (!(h->arena = malloc(len + 1)))
        return maas_error(MAAS_ERR_NOMEM, "out of memory reading a %zu-byte header", len);
    jp p = {buf, len, 0, h->arena, 0};
    jp_ws(&p);
    if (jp_peek(&p) != '{') {
        s = len == 0 ? maas_error(MAAS_ERR_FORMAT, "the header is empty; expected a JSON object")
                     : jp_fail(&p, "expected the header to be a JSON object");
        goto fail;
    }
    p.pos++;
    jp_ws(&p);
    if (jp_peek(&p) == '}')
        p.pos++;
    else
        for (;;) {
            const char *k;
            size_t kn;
            if ((s = jp_string(&p, &k, &kn)) != MAAS_OK || (s = jp_expect(&p, ':')) != MAAS_OK)
                goto fail;
            if (key_is(k, kn, "__metadata__")) {
                if (h->has_meta) {
                    s = maas_error(MAAS_ERR_FORMAT, "the header has the key '__metadata__' twice");
                    goto fail;
                }
                h->has_meta = 1;
                h->meta_start = p.pos;
                if (jp_peek(&p) != '{') {
                    s = jp_fail(&p, "__metadata__ must be an object of strings");
                    goto fail;
                }
                if ((s = parse_metadata(&p)) != MAAS_OK)
                    goto fail;
                h->meta_end = p.pos;
            } else {
                if ((s = grow((void **)&h->entries, &h->cap, (size_t)h->n + 1, sizeof *h->entries)) != MAAS_OK)
                    goto fail;
                maas_st_info *e = &h->entries[h->n];
                memset(e, 0, sizeof *e);
                e->name = k;
                e->name_len = kn;
                if ((s = parse_tensor(&p, e)) != MAAS_OK)
                    goto fail;
                h->n++;
            }
            jp_ws(&p);
            int c = jp_peek(&p);
            if (c == ',') {
                p.pos++;
                jp_ws(&p);
                continue;
            }
            if (c == '}') {
                p.pos++;
                break;
            }
            s = c < 0 ? jp_fail(&p, "the header ends inside its object")
                      : jp_fail(&p, "expected ',' or '}' after a tensor entry");
            goto fail;
        }
    jp_ws(&p);
    if (p.pos != len) {
        s = jp_fail(&p, "trailing data after the header's object");
        goto fail;
    }
    /* duplicate names */
    if (h->n > 1) {
        strref *names = malloc((size_t)h->n * sizeof *names);
        if (!names) {
            s = maas_error(MAAS_ERR_NOMEM, "out of memory checking tensor names");
            goto fail;
        }
        for (int64_t i = 0; i < h->n; i++) {
            names[i].s = h->entries[i].name;
            names[i].n = h->entries[i].name_len;
        }
        qsort(names, (size_t)h->n, sizeof *names, cmp_strref);
        for (int64_t i = 1; i < h->n; i++)
            if (cmp_strref(&names[i - 1], &names[i]) == 0) {
                char b[100];
                s = maas_error(MAAS_ERR_FORMAT, "the header names tensor '%s' twice",
                               printable(names[i].s, names[i].n, b, sizeof b));
                free(names);
                goto fail;
            }
        free(names);
    }
    return MAAS_OK;
fail:
    header_free(h);
    return s;
}

static int cmp_offsets(const void *a, const void *b)
{
    const maas_st_info *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks each entry against the data section and sorts them by offset:
 * a dtype maas has, byte length == element size * elements, offsets in
 * order, in bounds, neither overlapping nor leaving gaps, covering the
 * section exactly. */
static maas_status check_entries(header *h, int64_t data_size)
{
    char nb[100], ob[100], sb[200];
    for (int64_t i = 0; i < h->n; i++) {
        maas_st_info *e = &h->entries[i];
        const char *name = printable(e->name, e->name_len, nb, sizeof nb);
        int dt = -1;
        for (int d = 0; d < MAAS_DTYPE_COUNT && dt < 0; d++)
            if (key_is(e->dtype, e->dtype_len, st_dtype_names[d]))
                dt = d;
        if (dt < 0)
            return maas_error(MAAS_ERR_FORMAT,
                              "tensor '%s' has dtype '%s'; maas reads F32, I32, I64, I8, U8 and BOOL "
                              "tensors only (convert it, e.g. to F32, before saving)",
                              name, printable(e->dtype, e->dtype_len, ob, sizeof ob));
        e->dt = (maas_dtype)dt;
        const int64_t elsize = (int64_t)maas_dtype_size(e->dt);
        if (e->begin > e->end)
            return maas_error(MAAS_ERR_FORMAT,
                              "tensor '%s' has misordered data_offsets [%lld, %lld] (begin after end)",
                              name, (long long)e->begin, (long long)e->end);
        if (e->end > data_size)
            return maas_error(MAAS_ERR_FORMAT,
                              "tensor '%s' has data_offsets [%lld, %lld] that run past the end of the "
                              "%lld-byte data section (truncated file?)",
                              name, (long long)e->begin, (long long)e->end, (long long)data_size);
        int64_t count, bytes;
        maas_shape_str(e->ndim, e->shape, sb, sizeof sb);
        if (maas_shape_size(e->ndim, e->shape, &count) != 0 || maas_mul_size(count, elsize, &bytes) != 0)
            return maas_error(MAAS_ERR_FORMAT, "tensor '%s' has shape %s whose size overflows", name, sb);
        if (bytes != e->end - e->begin)
            return maas_error(MAAS_ERR_FORMAT,
                              "tensor '%s' has shape %s (%lld bytes of %s) but data_offsets [%lld, %lld] "
                              "hold %lld bytes",
                              name, sb, (long long)bytes, st_dtype_names[e->dt], (long long)e->begin,
                              (long long)e->end,
                              (long long)(e->end - e->begin));
    }
    if (h->n > 1)
        qsort(h->entries, (size_t)h->n, sizeof *h->entries, cmp_offsets);
    int64_t at = 0;
    for (int64_t i = 0; i < h->n; i++) {
        maas_st_info *e = &h->entries[i];
        if (e->begin < at)
            return maas_error(MAAS_ERR_FORMAT, "tensor '%s' (data_offsets [%lld, %lld]) overlaps tensor '%s'",
                              printable(e->name, e->name_len, nb, sizeof nb), (long long)e->begin,
                              (long long)e->end,
                              printable(h->entries[i - 1].name, h->entries[i - 1].name_len, ob, sizeof ob));
        if (e->begin > at)
            return maas_error(MAAS_ERR_FORMAT,
                              "bytes %lld to %lld of the data section belong to no tensor (gap before "
                              "tensor '%s')",
                              (long long)at, (long long)e->begin, printable(e->name, e->name_len, nb, sizeof nb));
        at = e->end;
    }
    if (at != data_size)
        return maas_error(MAAS_ERR_FORMAT,
                          "the tensors cover %lld bytes but the data section has %lld (extra bytes at the end)",
                          (long long)at, (long long)data_size);
    return MAAS_OK;
}

/* ------------------------------------------------------------- reading */

typedef struct {
    long refs;      /* atomic: tensors may be released from any thread */
    void *addr;
    size_t len;
} st_mapping;

static void mapping_release(void *owner)
{
    st_mapping *m = owner;
    if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        munmap(m->addr, m->len);
        free(m);
    }
}

struct maas_st_file {
    header h;
    maas_tensor **tensors; /* one per entry, in offset order */
    char *metadata;        /* NUL-terminated JSON object */
    size_t metadata_len;
    st_mapping *map;       /* NULL when the data was copied */
    int64_t file_size, data_start;
};

static maas_status pread_full(int fd, void *buf, size_t n, int64_t off)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            st_errno = errno;
            return maas_error(MAAS_ERR_IO, "reading the model file: %s", strerror(errno));
        }
        if (r == 0)
            return maas_error(MAAS_ERR_FORMAT, "the file ended early (was it truncated while being read?)");
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return MAAS_OK;
}

void maas_st_close(maas_st_file *f)
{
    if (!f)
        return;
    if (f->tensors)
        for (int64_t i = 0; i < f->h.n; i++)
            maas_tensor_decref(f->tensors[i]);
    free(f->tensors);
    mapping_release(f->map);
    free(f->metadata);
    header_free(&f->h);
    free(f);
}

maas_status maas_st_load(const char *path, int use_mmap, maas_st_file **out)
{
    maas_status s;
    unsigned char *hbuf = NULL;
    maas_st_file *f = NULL;
    struct stat sb;
    *out = NULL;
    st_errno = 0;
    if (MAAS_BIG_ENDIAN)
        return maas_error(MAAS_ERR_STATE, "model files are little-endian; big-endian hosts are not supported");
    /* O_NONBLOCK: opening a FIFO must not hang; it is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return io_error("cannot open", path);
    if (fstat(fd, &sb) != 0) {
        s = io_error("cannot stat", path);
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        errno = EISDIR;
        s = io_error("cannot load", path);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        char p[300];
        s = maas_error(MAAS_ERR_FORMAT, "'%s' is not a regular file (a model file must be one)",
                       printable(path, strlen(path), p, sizeof p));
        goto fail;
    }
    if (!(f = calloc(1, sizeof *f))) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory opening a model file");
        goto fail;
    }
    f->file_size = (int64_t)sb.st_size;
    if (f->file_size < 8) {
        s = maas_error(MAAS_ERR_FORMAT,
                       "the file is %lld bytes long, too short for a safetensors file (it starts with an "
                       "8-byte header length)",
                       (long long)f->file_size);
        goto fail;
    }
    unsigned char lenbuf[8];
    if ((s = pread_full(fd, lenbuf, 8, 0)) != MAAS_OK)
        goto fail;
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--)
        hlen = (hlen << 8) | lenbuf[k];
    if (hlen > (uint64_t)MAAS_ST_HEADER_CAP) {
        s = maas_error(MAAS_ERR_FORMAT, "the header length %llu exceeds the limit of %d bytes (100 MB)",
                       (unsigned long long)hlen, MAAS_ST_HEADER_CAP);
        goto fail;
    }
    if (hlen > (uint64_t)(f->file_size - 8)) {
        s = maas_error(MAAS_ERR_FORMAT,
                       "the header length %llu is larger than the %lld bytes that follow it (truncated "
                       "file, or not a safetensors file)",
                       (unsigned long long)hlen, (long long)(f->file_size - 8));
        goto fail;
    }
    if (!(hbuf = malloc(hlen ? (size_t)hlen : 1))) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory reading a %llu-byte header", (unsigned long long)hlen);
        goto fail;
    }
    if ((s = pread_full(fd, hbuf, (size_t)hlen, 8)) != MAAS_OK)
        goto fail;
    if ((s = parse_header(hbuf, (size_t)hlen, &f->h)) != MAAS_OK)
        goto fail;
    f->data_start = 8 + (int64_t)hlen;
    if ((s = check_entries(&f->h, f->file_size - f->data_start)) != MAAS_OK)
        goto fail;
    /* the metadata, as its raw (validated) JSON text */
    if (f->h.has_meta) {
        f->metadata_len = f->h.meta_end - f->h.meta_start;
        f->metadata = malloc(f->metadata_len + 1);
        if (f->metadata)
            memcpy(f->metadata, hbuf + f->h.meta_start, f->metadata_len);
    } else {
        f->metadata_len = 2;
        f->metadata = malloc(3);
        if (f->metadata)
            memcpy(f->metadata, "{}", 2);
    }
    if (!f->metadata) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory copying the metadata");
        goto fail;
    }
    f->metadata[f->metadata_len] = '\0';
    free(hbuf);
    hbuf = NULL;

    if (!(f->tensors = calloc(f->h.n ? (size_t)f->h.n : 1, sizeof *f->tensors))) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory for %lld tensors", (long long)f->h.n);
        goto fail;
    }
    char *base = NULL;
    if (use_mmap) {
        if ((uint64_t)f->file_size > (uint64_t)SIZE_MAX) {
            s = maas_error(MAAS_ERR_NOMEM, "the file is too large to map");
            goto fail;
        }
        if (!(f->map = calloc(1, sizeof *f->map))) {
            s = maas_error(MAAS_ERR_NOMEM, "out of memory mapping a model file");
            goto fail;
        }
        /* Private and writable: pages are shared with the page cache (and so
         * between processes) until written; a write copies that one page
         * and never reaches the file. */
        void *addr = mmap(NULL, (size_t)f->file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            free(f->map);
            f->map = NULL;
            s = io_error("cannot map", path);
            goto fail;
        }
        f->map->addr = addr;
        f->map->len = (size_t)f->file_size;
        f->map->refs = 1;
        base = (char *)addr + f->data_start;
    }
    for (int64_t i = 0; i < f->h.n; i++) {
        maas_st_info *e = &f->h.entries[i];
        maas_tensor *t;
        char *src = base ? base + e->begin : NULL;
        if (src && ((uintptr_t)src % maas_dtype_size(e->dt)) == 0) {
            t = maas_tensor_wrap_typed(src, e->dt, e->ndim, e->shape, f->map, mapping_release);
            if (t)
                __atomic_add_fetch(&f->map->refs, 1, __ATOMIC_ACQ_REL);
        } else {
            /* copy: asked for, or the data is not aligned for its dtype in the file */
            t = maas_tensor_new_typed(e->dt, e->ndim, e->shape);
            if (t && e->end > e->begin) {
                if (src)
                    memcpy(t->ptr, src, (size_t)(e->end - e->begin));
                else if ((s = pread_full(fd, t->ptr, (size_t)(e->end - e->begin),
                                         f->data_start + e->begin)) != MAAS_OK) {
                    maas_tensor_decref(t);
                    goto fail;
                }
            }
        }
        if (!t) {
            s = maas_error(MAAS_ERR_NOMEM, "out of memory for tensor %lld of the file", (long long)i);
            goto fail;
        }
        f->tensors[i] = t;
        if (e->dt == MAAS_BOOL) {
            /* a bool is one byte, 0 or 1: kernels rely on it */
            const unsigned char *b = t->ptr;
            for (int64_t k = 0; k < t->size; k++)
                if (b[k] > 1) {
                    char nb[100];
                    s = maas_error(MAAS_ERR_FORMAT,
                                   "tensor '%s' is BOOL but element %lld is the byte %u (a bool is 0 or 1)",
                                   printable(e->name, e->name_len, nb, sizeof nb), (long long)k, b[k]);
                    goto fail;
                }
        }
    }
    close(fd);
    *out = f;
    return MAAS_OK;
fail:
    free(hbuf);
    maas_st_close(f);
    close(fd);
    return s;
}

int64_t maas_st_count(const maas_st_file *f) { return f->h.n; }

const maas_st_info *maas_st_info_at(const maas_st_file *f, int64_t i)
{
    return i >= 0 && i < f->h.n ? &f->h.entries[i] : NULL;
}

maas_tensor *maas_st_tensor(const maas_st_file *f, int64_t i)
{
    return i >= 0 && i < f->h.n ? f->tensors[i] : NULL;
}

const char *maas_st_metadata(const maas_st_file *f, size_t *len)
{
    if (len)
        *len = f->metadata_len;
    return f->metadata;
}

const void *maas_st_mapping(const maas_st_file *f, size_t *len)
{
    if (len)
        *len = f->map ? f->map->len : 0;
    return f->map ? f->map->addr : NULL;
}

int64_t maas_st_data_start(const maas_st_file *f) { return f->data_start; }

/* ------------------------------------------------------------- writing */

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (n > SIZE_MAX - b->n - 1) {
        b->failed = 1;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) {
            if (nc > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            nc *= 2;
        }
        char *q = realloc(b->p, nc);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string literal of the (valid UTF-8) bytes s[0..n). */
static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        if (c == '"')
            sb_put(b, "\\\"", 2);
        else if (c == '\\')
            sb_put(b, "\\\\", 2);
        else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sb_put(b, e, 6);
        }
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

static maas_status write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t r = write(fd, p, chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            st_errno = errno;
            return maas_error(MAAS_ERR_IO, "writing the model file: %s", strerror(errno));
        }
        p += r;
        n -= (size_t)r;
    }
    return MAAS_OK;
}

maas_status maas_st_check_metadata(const char *json, size_t len)
{
    size_t bad = utf8_invalid_at((const unsigned char *)json, len);
    if (bad != len)
        return maas_error(MAAS_ERR_VALUE, "the metadata is not valid UTF-8 (byte %zu)", bad);
    char *arena = malloc(len + 1);
    if (!arena)
        return maas_error(MAAS_ERR_NOMEM, "out of memory checking the metadata");
    jp p = {(const unsigned char *)json, len, 0, arena, 0};
    maas_status s = MAAS_OK;
    jp_ws(&p);
    if (jp_peek(&p) != '{')
        s = jp_fail(&p, "the metadata must be a JSON object of strings");
    else if ((s = parse_metadata(&p)) == MAAS_OK) {
        jp_ws(&p);
        if (p.pos != len)
            s = jp_fail(&p, "trailing data after the metadata object");
    }
    free(arena);
    return s;
}

maas_status maas_st_save(const char *path, int64_t n, const char *const *names, const size_t *name_lens,
                         maas_tensor *const *tensors, const char *metadata_json)
{
    maas_status s = MAAS_OK;
    sbuf hb = {0};
    char *tmp = NULL, *dir = NULL;
    strref *sorted = NULL;
    int fd = -1, created = 0;
    char nb[100];
    st_errno = 0;
    if (MAAS_BIG_ENDIAN)
        return maas_error(MAAS_ERR_STATE, "model files are little-endian; big-endian hosts are not supported");
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "negative tensor count");
    /* names: UTF-8, not reserved, unique */
    if (n > 0 && !(sorted = malloc((size_t)n * sizeof *sorted)))
        return maas_error(MAAS_ERR_NOMEM, "out of memory saving %lld tensors", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (utf8_invalid_at((const unsigned char *)names[i], name_lens[i]) != name_lens[i]) {
            s = maas_error(MAAS_ERR_VALUE, "tensor name '%s' is not valid UTF-8",
                           printable(names[i], name_lens[i], nb, sizeof nb));
            goto out;
        }
        if (key_is(names[i], name_lens[i], "__metadata__")) {
            s = maas_error(MAAS_ERR_VALUE, "'__metadata__' is reserved and cannot name a tensor");
            goto out;
        }
        sorted[i].s = names[i];
        sorted[i].n = name_lens[i];
    }
    if (n > 1) {
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_strref);
        for (int64_t i = 1; i < n; i++)
            if (cmp_strref(&sorted[i - 1], &sorted[i]) == 0) {
                s = maas_error(MAAS_ERR_VALUE, "tensor name '%s' is given twice",
                               printable(sorted[i].s, sorted[i].n, nb, sizeof nb));
                goto out;
            }
    }
    size_t mlen = metadata_json ? strlen(metadata_json) : 0;
    if (metadata_json && (s = maas_st_check_metadata(metadata_json, mlen)) != MAAS_OK) {
        if (s == MAAS_ERR_FORMAT)
            s = MAAS_ERR_VALUE; /* the caller's argument, not a file */
        goto out;
    }

    /* the header */
    sb_put(&hb, "{", 1);
    if (metadata_json) {
        size_t a = 0, z = mlen; /* trim whitespace */
        while (a < z && strchr(" \t\r\n", metadata_json[a]))
            a++;
        while (z > a && strchr(" \t\r\n", metadata_json[z - 1]))
            z--;
        sb_str(&hb, "\"__metadata__\":");
        sb_put(&hb, metadata_json + a, z - a);
    }
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const maas_tensor *t = tensors[i];
        int64_t bytes;
        if ((unsigned)t->dtype >= MAAS_DTYPE_COUNT) {
            s = maas_error(MAAS_ERR_TYPE, "tensor '%s' has an unknown dtype code %d",
                           printable(names[i], name_lens[i], nb, sizeof nb), (int)t->dtype);
            goto out;
        }
        if (maas_mul_size(t->size, (int64_t)maas_dtype_size(t->dtype), &bytes) != 0 ||
            off > INT64_MAX - bytes) {
            s = maas_error(MAAS_ERR_VALUE, "the tensors' total size overflows");
            goto out;
        }
        char num[64];
        if (metadata_json || i > 0)
            sb_put(&hb, ",", 1);
        sb_json_string(&hb, names[i], name_lens[i]);
        sb_str(&hb, ":{\"dtype\":\"");
        sb_str(&hb, st_dtype_names[t->dtype]);
        sb_str(&hb, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(&hb, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + bytes));
        sb_str(&hb, num);
        off += bytes;
    }
    sb_put(&hb, "}", 1);
    while (!hb.failed && (8 + hb.n) % 64 != 0)
        sb_put(&hb, " ", 1);
    if (hb.failed) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory building the header");
        goto out;
    }
    if (hb.n > (size_t)MAAS_ST_HEADER_CAP) {
        s = maas_error(MAAS_ERR_VALUE, "the header would be %zu bytes, over the 100 MB limit readers accept",
                       hb.n);
        goto out;
    }

    /* a temporary file beside the target: same filesystem, so rename is
     * atomic. Its name is short and of fixed length (not the target's name
     * plus a suffix), so that any legal target name works, a 255-byte
     * basename included. */
    size_t plen = strlen(path);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    if (!(tmp = malloc(plen + 64)) || !(dir = malloc(dlen + 2))) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (slash) {
        memcpy(dir, path, dlen ? dlen : 1); /* "/x" -> "/" */
        dir[dlen ? dlen : 1] = '\0';
    } else
        strcpy(dir, ".");
    static long counter;
    for (int attempt = 0; fd < 0; attempt++) {
        long c = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        snprintf(tmp, plen + 64, "%.*s.tmp-maas-%ld-%ld", (int)(slash ? slash - path + 1 : 0), path,
                 (long)getpid(), c);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && (errno != EEXIST || attempt > 100)) {
            s = io_error("cannot create a temporary file beside", path);
            goto out;
        }
    }
    created = 1;
    unsigned char lenbuf[8];
    uint64_t hl = hb.n;
    for (int k = 0; k < 8; k++)
        lenbuf[k] = (unsigned char)(hl >> (8 * k));
    if ((s = write_full(fd, lenbuf, 8)) != MAAS_OK || (s = write_full(fd, hb.p, hb.n)) != MAAS_OK)
        goto out;
    for (int64_t i = 0; i < n; i++)
        if ((s = write_full(fd, tensors[i]->ptr,
                            (size_t)tensors[i]->size * maas_dtype_size(tensors[i]->dtype))) != MAAS_OK)
            goto out;
    if (fsync(fd) != 0) {
        s = io_error("cannot flush", tmp);
        goto out;
    }
    int r = close(fd);
    fd = -1;
    if (r != 0) {
        s = io_error("cannot close", tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        s = io_error("cannot rename the temporary file over", path);
        goto out;
    }
    free(tmp);
    tmp = NULL; /* renamed: nothing to clean up */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* make the rename durable; some filesystems refuse fsync on a dir */
        if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
            s = io_error("cannot flush the folder of", path);
        close(dfd);
    }
out:
    if (fd >= 0)
        close(fd);
    if (tmp) {
        if (created) /* not renamed: an interrupted save leaves the target whole */
            unlink(tmp);
        free(tmp);
    }
    free(dir);
    free(hb.p);
    free(sorted);
    return s;
}
