/* The safetensors reader and writer: round trip (mapped and copied), the
 * writer's checks and atomic replace, every malformed-file case, every
 * truncation of a real file, and a seeded byte-mutation loop, so that
 * ASan/UBSan see the reader on hostile input. */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void no_release(void *owner) { (void)owner; } /* stack memory */

static const char *in_dir(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* A file with header text `hdr` (length hlen_override when >= 0) and
 * `ndata` data bytes. */
static void write_st(const char *path, const char *hdr, long long hlen_override, size_t ndata)
{
    size_t hl = strlen(hdr);
    uint64_t h = hlen_override >= 0 ? (uint64_t)hlen_override : hl;
    size_t n = 8 + hl + ndata;
    unsigned char *p = calloc(1, n);
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(h >> (8 * k));
    memcpy(p + 8, hdr, hl);
    for (size_t i = 0; i < ndata; i++)
        p[8 + hl + i] = (unsigned char)i;
    write_bytes(path, p, n);
    free(p);
}

/* Loads path expecting `want` and a message containing `msg`. */
static void expect_fail(const char *path, maas_status want, const char *msg, int line)
{
    for (int mm = 0; mm < 2; mm++) {
        maas_st_file *f = (maas_st_file *)1;
        maas_status s = maas_st_load(path, mm, &f);
        if (s != want || f != NULL || !strstr(maas_last_error(), msg)) {
            check_failures++;
            fprintf(stderr, "test_format.c:%d: status %d (want %d), message: %s\n   (want it to contain: %s)\n",
                    line, (int)s, (int)want, maas_last_error(), msg);
        }
    }
}

#define BAD(hdr, ndata, msg) do { write_st(in_dir("bad.st"), hdr, -1, ndata); \
    expect_fail(in_dir("bad.st"), MAAS_ERR_FORMAT, msg, __LINE__); } while (0)

static const char *T = "\"dtype\":\"F32\"";

static void test_round_trip(void)
{
    float a[6], b[24];
    check_fill(a, 6, 1);
    check_fill(b, 24, 2);
    float c = 3.5f;
    maas_tensor *ts[4] = {
        maas_tensor_wrap(a, 2, (int64_t[]){2, 3}, NULL, no_release),
        maas_tensor_wrap(b, 3, (int64_t[]){2, 3, 4}, NULL, no_release),
        maas_tensor_wrap(&c, 0, NULL, NULL, no_release),
        maas_tensor_zeros(2, (int64_t[]){0, 5}),
    };
    const char *names[4] = {"dense/kernel", "w\"eird\\name\n\xc3\xa9", "scalar", "empty"};
    size_t lens[4];
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(names[i]);
    const char *meta = " {\"format\": \"maas\", \"k\\u00e9\": \"v\\n\"} ";
    const char *path = in_dir("model.st");
    CHECK_OK(maas_st_save(path, 4, names, lens, ts, meta));
    size_t fsz;
    unsigned char *raw = read_bytes(path, &fsz);
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--)
        hl = (hl << 8) | raw[k];
    CHECK((8 + hl) % 64 == 0);            /* the data section is 64-byte aligned */
    CHECK(fsz == 8 + hl + (6 + 24 + 1) * 4);
    free(raw);

    for (int mm = 1; mm >= 0; mm--) {
        maas_st_file *f = NULL;
        CHECK_OK(maas_st_load(path, mm, &f));
        if (!f)
            continue;
        CHECK(maas_st_count(f) == 4);
        size_t ml;
        const char *m = maas_st_metadata(f, &ml);
        CHECK(ml == strlen("{\"format\": \"maas\", \"k\\u00e9\": \"v\\n\"}") && strncmp(m, "{\"format\"", 9) == 0);
        size_t maplen;
        const char *map = maas_st_mapping(f, &maplen);
        CHECK(mm ? map != NULL && maplen == fsz : map == NULL);
        maas_tensor *got[4] = {0};
        for (int64_t i = 0; i < 4; i++) {
            const maas_st_info *e = maas_st_info_at(f, i);
            for (int j = 0; j < 4; j++)
                if (e->name_len == lens[j] && memcmp(e->name, names[j], lens[j]) == 0) {
                    got[j] = maas_st_tensor(f, i);
                    maas_tensor_incref(got[j]);
                }
        }
        maas_st_close(f); /* the tensors outlive the file object */
        for (int j = 0; j < 4; j++) {
            CHECK(got[j] && maas_same_shape(got[j], ts[j]));
            if (!got[j])
                continue;
            CHECK(memcmp(got[j]->data, ts[j]->data, (size_t)ts[j]->size * 4) == 0);
            if (mm && got[j]->size)
                CHECK((const char *)got[j]->data > map && (const char *)got[j]->data < map + maplen);
        }
        /* copy-on-write: writing a mapped tensor never reaches the file */
        if (got[0])
            got[0]->data[0] = 1234.0f;
        for (int j = 0; j < 4; j++)
            maas_tensor_decref(got[j]);
    }
    maas_st_file *f = NULL;
    CHECK_OK(maas_st_load(path, 1, &f));
    if (f) {
        for (int64_t i = 0; i < maas_st_count(f); i++)
            if (maas_st_info_at(f, i)->name_len == 12)
                CHECK(maas_st_tensor(f, i)->data[0] == a[0]);
        maas_st_close(f);
    }

    /* no metadata, no tensors */
    CHECK_OK(maas_st_save(in_dir("empty.st"), 0, NULL, NULL, NULL, NULL));
    CHECK_OK(maas_st_load(in_dir("empty.st"), 1, &f));
    if (f) {
        CHECK(maas_st_count(f) == 0 && strcmp(maas_st_metadata(f, NULL), "{}") == 0);
        maas_st_close(f);
    }

    /* writer checks */
    const char *dup[2] = {"x", "x"};
    size_t dl[2] = {1, 1};
    CHECK(maas_st_save(in_dir("w.st"), 2, dup, dl, ts, NULL) == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "'x' is given twice"));
    const char *res[1] = {"__metadata__"};
    size_t rl[1] = {12};
    CHECK(maas_st_save(in_dir("w.st"), 1, res, rl, ts, NULL) == MAAS_ERR_VALUE);
    const char *bad8[1] = {"\xff"};
    size_t bl[1] = {1};
    CHECK(maas_st_save(in_dir("w.st"), 1, bad8, bl, ts, NULL) == MAAS_ERR_VALUE);
    CHECK(maas_st_save(in_dir("w.st"), 1, names, lens, ts, "{\"a\": 1}") == MAAS_ERR_VALUE);
    CHECK(strstr(maas_last_error(), "must be a string"));
    CHECK(maas_st_save(in_dir("w.st"), 1, names, lens, ts, "{\"a\":\"1\"} x") == MAAS_ERR_VALUE);
    CHECK(maas_st_save(in_dir("w.st"), 1, names, lens, ts, "{\"a\":\"1\",\"a\":\"2\"}") == MAAS_ERR_VALUE);
    CHECK(maas_st_save(in_dir("no/such/dir/w.st"), 1, names, lens, ts, NULL) == MAAS_ERR_IO);
    CHECK(maas_st_last_errno() == ENOENT);
    CHECK(access(in_dir("w.st"), F_OK) != 0);

    /* replace: the new content is there and no temporary file is left */
    CHECK_OK(maas_st_save(path, 1, names, lens, ts, NULL));
    CHECK_OK(maas_st_load(path, 0, &f));
    if (f) {
        CHECK(maas_st_count(f) == 1);
        maas_st_close(f);
    }
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        CHECK(strstr(de->d_name, ".tmp-") == NULL);
    if (d)
        closedir(d);
    for (int i = 0; i < 4; i++)
        maas_tensor_decref(ts[i]);
}

static void test_malformed(void)
{
    char h[1024];
    /* sizes and lengths */
    write_bytes(in_dir("bad.st"), "abc", 3);
    expect_fail(in_dir("bad.st"), MAAS_ERR_FORMAT, "too short", __LINE__);
    write_st(in_dir("bad.st"), "{}", 1000, 0);
    expect_fail(in_dir("bad.st"), MAAS_ERR_FORMAT, "larger than the 2 bytes", __LINE__);
    write_st(in_dir("bad.st"), "{}", 200000000LL, 0);
    expect_fail(in_dir("bad.st"), MAAS_ERR_FORMAT, "exceeds the limit", __LINE__);
    write_st(in_dir("bad.st"), "{}", (long long)(~0ULL >> 1), 0);
    expect_fail(in_dir("bad.st"), MAAS_ERR_FORMAT, "exceeds the limit", __LINE__);
    BAD("", 0, "the header is empty");
    /* encoding and syntax */
    BAD("{\"\xff\":{}}", 0, "not valid UTF-8");
    BAD("{\"\xed\xa0\x80\":{}}", 0, "not valid UTF-8");      /* an encoded surrogate */
    BAD("{\"\xc0\xaf\":{}}", 0, "not valid UTF-8");          /* overlong */
    BAD("hello", 0, "not valid JSON: expected the header to be a JSON object");
    BAD("[]", 0, "JSON object");
    BAD("{} x", 0, "trailing data");
    BAD("{}{}", 0, "trailing data");
    BAD("{\"a\"", 0, "expected ':' but the header ends");
    BAD("{\"a", 0, "unterminated string");
    BAD("{\"a\\q\":{}}", 0, "invalid escape");
    BAD("{\"a\\ud800\":{}}", 0, "unpaired surrogate");
    BAD("{\"a\\udc00\":{}}", 0, "unpaired surrogate");
    BAD("{\"a\\u12\":{}}", 0, "invalid \\u escape");
    BAD("{\"a\tb\":{}}", 0, "control character");
    BAD("{,}", 0, "expected a string");
    BAD("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0,
        "must be an object");
    BAD("{\"__metadata__\":{\"a\":{\"b\":{\"c\":\"d\"}}}}", 0, "the __metadata__ value of 'a' must be a string");
    BAD("{\"__metadata__\":[]}", 0, "__metadata__ must be an object");
    BAD("{\"__metadata__\":{\"a\":\"1\",\"\\u0061\":\"2\"}}", 0, "has the key 'a' twice");
    BAD("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "'__metadata__' twice");
    /* the schema of an entry */
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{%s,\"shape\":[1],\"data_offsets\":[4,8]}}", T, T);
    BAD(h, 8, "names tensor 'a' twice");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1]}}", T);
    BAD(h, 4, "tensor 'a' has no 'data_offsets'");
    BAD("{\"a\":{}}", 0, "has no dtype, shape and data_offsets");
    snprintf(h, sizeof h, "{\"a\":{%s,%s,\"shape\":[1],\"data_offsets\":[0,4]}}", T, T);
    BAD(h, 4, "the key 'dtype' twice");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", T);
    BAD(h, 4, "unknown key 'x'");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[-1],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "a shape dimension must be a non-negative integer");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1.0],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "must be an integer");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[01],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "leading zero");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "too large");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "more than 8 dimensions");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4,8]}}", T);
    BAD(h, 8, "exactly two integers");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":1,\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "shape of tensor 'a' must be an array");
    BAD("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "tensor 'a' has dtype 'F16'; maas reads F32, I32, I64, I8, U8 and BOOL tensors only");
    BAD("{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "dtype of tensor 'a' must be a string");
    /* sizes and offsets */
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[2,3],\"data_offsets\":[0,20]}}", T);
    BAD(h, 20, "tensor 'a' has shape (2, 3) (24 bytes of F32) but data_offsets [0, 20] hold 20 bytes");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "whose size overflows");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[2305843009213693952],\"data_offsets\":[0,4]}}", T);
    BAD(h, 4, "whose size overflows"); /* 2^61 elements * 4 bytes overflows int64 */
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[8,4]}}", T);
    BAD(h, 8, "misordered data_offsets [8, 4]");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{%s,\"shape\":[2],\"data_offsets\":[4,12]}}", T, T);
    BAD(h, 12, "tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a'");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{%s,\"shape\":[1],\"data_offsets\":[8,12]}}", T, T);
    BAD(h, 12, "bytes 4 to 8 of the data section belong to no tensor");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[4],\"data_offsets\":[0,16]}}", T);
    BAD(h, 12, "run past the end of the 12-byte data section");
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4]}}", T);
    BAD(h, 8, "cover 4 bytes but the data section has 8");
    /* out-of-order entries are fine when they tile the section */
    snprintf(h, sizeof h, "{\"b\":{%s,\"shape\":[1],\"data_offsets\":[4,8]},\"z\":{%s,\"shape\":[0],\"data_offsets\":[8,8]},\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4]}}", T, T, T);
    write_st(in_dir("ok.st"), h, -1, 8);
    maas_st_file *f = NULL;
    CHECK_OK(maas_st_load(in_dir("ok.st"), 1, &f));
    if (f) {
        CHECK(maas_st_count(f) == 3 && maas_st_info_at(f, 0)->name[0] == 'a');
        maas_st_close(f);
    }
    /* data not float-aligned in the file (a 3-byte header): copied, still right */
    snprintf(h, sizeof h, "{\"a\":{%s,\"shape\":[1],\"data_offsets\":[0,4]}} ", T);
    size_t hl = strlen(h);
    if (hl % 2 == 0)
        h[hl++] = ' ', h[hl] = '\0';
    write_st(in_dir("odd.st"), h, -1, 4);
    CHECK_OK(maas_st_load(in_dir("odd.st"), 1, &f));
    if (f) {
        unsigned char want[4] = {0, 1, 2, 3};
        CHECK(memcmp(maas_st_tensor(f, 0)->data, want, 4) == 0);
        maas_st_close(f);
    }
    /* not a file */
    expect_fail(dir, MAAS_ERR_IO, "Is a directory", __LINE__);
    expect_fail(in_dir("missing.st"), MAAS_ERR_IO, "No such file", __LINE__);
    CHECK(maas_st_last_errno() == ENOENT);
    mkfifo(in_dir("fifo"), 0600);
    expect_fail(in_dir("fifo"), MAAS_ERR_FORMAT, "not a regular file", __LINE__);
}

/* Every truncation of a real file, and seeded random byte mutations: each
 * load succeeds or fails with MAAS_ERR_FORMAT, and nothing crashes. */
static void test_truncations_and_mutations(void)
{
    float w[40];
    check_fill(w, 40, 7);
    maas_tensor *ts[3] = {maas_tensor_wrap(w, 2, (int64_t[]){4, 5}, NULL, no_release),
                          maas_tensor_wrap(w + 20, 1, (int64_t[]){5}, NULL, no_release),
                          maas_tensor_wrap(w + 25, 2, (int64_t[]){3, 5}, NULL, no_release)};
    const char *names[3] = {"dense/kernel", "dense/bias", "out/kernel"};
    size_t lens[3] = {12, 10, 10};
    CHECK_OK(maas_st_save(in_dir("real.st"), 3, names, lens, ts,
                          "{\"maas.config\":\"{\\\"layers\\\": [1, 2]}\",\"maas.version\":\"0.1.0\"}"));
    for (int i = 0; i < 3; i++)
        maas_tensor_decref(ts[i]);
    size_t n;
    unsigned char *good = read_bytes(in_dir("real.st"), &n);
    unsigned char *buf = malloc(n + 16);
    int ok = 0, bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(in_dir("t.st"), good, len);
        maas_st_file *f = NULL;
        maas_status s = maas_st_load(in_dir("t.st"), (int)(len & 1), &f);
        if (s != MAAS_ERR_FORMAT) {
            check_failures++;
            fprintf(stderr, "truncation to %zu bytes: status %d: %s\n", len, (int)s, maas_last_error());
        }
        maas_st_close(f);
    }
    uint64_t rng = 12345;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, good, n);
        size_t len = n;
        int edits = 1 + (int)(rng % 4);
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(rng >> 33) % len;
            int kind = (int)((rng >> 20) % 4);
            if (kind == 0)
                buf[pos] ^= (unsigned char)(1u << ((rng >> 8) % 8));
            else if (kind == 1)
                buf[pos] = (unsigned char)(rng >> 40);
            else if (kind == 2)
                buf[pos] = "{}[]\",:0123456789-eE. \\u"[(rng >> 44) % 25];
            else
                len = pos + 1;
        }
        write_bytes(in_dir("m.st"), buf, len);
        maas_st_file *f = NULL;
        maas_status s = maas_st_load(in_dir("m.st"), it & 1, &f);
        if (s == MAAS_OK) {
            ok++;
            for (int64_t i = 0; i < maas_st_count(f); i++) { /* touch every byte */
                volatile float sum = 0;
                maas_tensor *t = maas_st_tensor(f, i);
                for (int64_t k = 0; k < t->size; k++)
                    sum += t->data[k];
                (void)sum;
            }
        } else if (s == MAAS_ERR_FORMAT) {
            bad++;
        } else {
            check_failures++;
            fprintf(stderr, "mutation %d: status %d: %s\n", it, (int)s, maas_last_error());
        }
        maas_st_close(f);
    }
    printf("mutations: %d loaded, %d refused\n", ok, bad);
    CHECK(ok > 0 && bad > 0);
    free(buf);
    free(good);
}

static void rm_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlink(in_dir(de->d_name));
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Every dtype written and read back (mapped and copied), in an order that
 * leaves the int64 tensor misaligned in the file (so it is copied even when
 * mapped), a long target name (a 250-byte basename: the temporary file's
 * name must not grow with it), and BOOL bytes other than 0/1 refused. */
static void test_dtypes(void)
{
    float f[3] = {1.5f, -2.0f, 0.0f};
    int32_t i32[2] = {INT32_MIN, 7};
    int64_t i64[2] = {INT64_MAX, -3};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t u8[1] = {255};
    uint8_t b[4] = {1, 0, 0, 1};
    const maas_dtype dts[6] = {MAAS_I8, MAAS_I64, MAAS_F32, MAAS_I32, MAAS_U8, MAAS_BOOL};
    void *bufs[6] = {i8, i64, f, i32, u8, b};
    const int64_t sizes[6] = {3, 2, 3, 2, 1, 4};
    const char *names[6] = {"i8", "i64", "f32", "i32", "u8", "bool"};
    const char *st_names[6] = {"I8", "I64", "F32", "I32", "U8", "BOOL"};
    maas_tensor *ts[6];
    size_t lens[6];
    for (int i = 0; i < 6; i++) {
        ts[i] = maas_tensor_wrap_typed(bufs[i], dts[i], 1, &sizes[i], NULL, no_release);
        lens[i] = strlen(names[i]);
    }
    char longname[251];
    memset(longname, 'n', 250);
    longname[250] = '\0';
    const char *path = in_dir(longname);
    CHECK_OK(maas_st_save(path, 6, names, lens, ts, NULL));
    size_t fsz;
    unsigned char *raw = read_bytes(path, &fsz);
    CHECK(raw != NULL);
    if (raw) {
        for (int i = 0; i < 6; i++) {
            char want[32];
            snprintf(want, sizeof want, "\"dtype\":\"%s\"", st_names[i]);
            CHECK(strstr((const char *)raw + 8, want) != NULL);
        }
        free(raw);
    }
    for (int mm = 1; mm >= 0; mm--) {
        maas_st_file *fl = NULL;
        CHECK_OK(maas_st_load(path, mm, &fl));
        if (!fl)
            continue;
        CHECK(maas_st_count(fl) == 6);
        for (int64_t k = 0; k < maas_st_count(fl); k++) {
            const maas_st_info *e = maas_st_info_at(fl, k);
            maas_tensor *t = maas_st_tensor(fl, k);
            for (int i = 0; i < 6; i++)
                if (e->name_len == lens[i] && memcmp(e->name, names[i], lens[i]) == 0) {
                    CHECK(e->dt == dts[i] && t->dtype == dts[i] && t->size == sizes[i]);
                    CHECK(memcmp(t->ptr, bufs[i], (size_t)sizes[i] * maas_dtype_size(dts[i])) == 0);
                    CHECK((uintptr_t)t->ptr % maas_dtype_size(dts[i]) == 0);
                }
        }
        maas_st_close(fl);
    }
    unlink(path);
    for (int i = 0; i < 6; i++)
        maas_tensor_decref(ts[i]);
    BAD("{\"a\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
        "tensor 'a' is BOOL but element 2 is the byte 2");
    BAD("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
        "tensor 'a' has shape (1,) (8 bytes of I64) but data_offsets [0, 4] hold 4 bytes");
    BAD("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
        "tensor 'a' has dtype 'BF16'; maas reads F32, I32, I64, I8, U8 and BOOL tensors only");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/maas-test-format-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_malformed();
    test_truncations_and_mutations();
    test_dtypes();
    rm_dir();
    return check_done("test_format");
}
