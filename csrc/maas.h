/*
 * maas.h -- the public API of the maas C core.
 *
 * Overview
 * --------
 * The core is plain C99 (plus OpenMP pragmas): it never includes Python.h,
 * never aborts, exits or prints. Every fallible function returns a
 * maas_status; on failure it has set a thread-local message readable with
 * maas_last_error(). The Python binding (csrc/py/) maps the status to an
 * exception (MemoryError, ValueError, TypeError, ...).
 *
 *   status.c          status codes, thread-local message, checked size math
 *   tensor.c          maas_tensor: typed, C-contiguous, refcounted, views
 *   blas.c            the one place that calls cblas_* (OpenBLAS)
 *   threads.c         the thread-count setting shared by OpenMP and OpenBLAS
 *   optable.c         the op table: every op's attributes, shape and dtype
 *                     inference, forward and backward, in one entry
 *   autodiff.c        the tape: reverse-mode recording and gradient
 *   plan.c            compiled plans: a frozen trace, a whole training step
 *                     in one call
 *   format.c          the model file: safetensors read (mmap) and written
 *   ops/dense.c       matmul and the fused dense op
 *   ops/activation.c  unary elementwise ops, softmax, log_softmax
 *   ops/elementwise.c broadcasting binary ops
 *   ops/reduce.c      sum / mean / max over one axis
 *   ops/shape.c       reshape, slice, transpose, concat (copy kernels)
 *   ops/loss.c        per-sample losses
 *   ops/dropout.c     counter-based RNG and dropout
 *   ops/optim.c       fused in-place optimizer updates
 *
 * How to add an op: see "op table" below (a kernel, one table entry, a
 * Python wrapper, tests).
 *
 * Kernel conventions
 * ------------------
 * Kernels come in pairs maas_<op>_forward / maas_<op>_backward. Arguments
 * are ordered outputs, inputs, sizes. Forward kernels overwrite their
 * output. Backward kernels ACCUMULATE (+=) into their gradient outputs, so
 * that a tensor used twice gets the sum of both contributions; a NULL
 * gradient pointer means "not needed" and is skipped.
 *
 * Kernels never touch Python objects, so the binding may call them with the
 * GIL released. Kernels above MAAS_PAR_THRESHOLD elements use OpenMP with
 * maas_get_num_threads() threads; every reduction runs in a fixed order, so
 * results do not depend on the thread count.
 */
#ifndef MAAS_H
#define MAAS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ status */

typedef enum {
    MAAS_OK = 0,
    MAAS_ERR_NOMEM = 1,   /* -> MemoryError */
    MAAS_ERR_SHAPE = 2,   /* -> ValueError (shapes do not fit) */
    MAAS_ERR_VALUE = 3,   /* -> ValueError (a bad argument value) */
    MAAS_ERR_TYPE = 4,    /* -> TypeError */
    MAAS_ERR_FORMAT = 5,  /* -> maas.errors.ModelFormatError */
    MAAS_ERR_IO = 6,      /* -> OSError */
    MAAS_ERR_STATE = 7    /* -> RuntimeError (misuse, e.g. a freed tape) */
} maas_status;

/* Sets the thread-local message (printf-style) and returns `code`. */
maas_status maas_error(maas_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *maas_last_error(void);
void maas_clear_error(void);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int maas_mul_size(int64_t a, int64_t b, int64_t *out);
int maas_shape_size(int ndim, const int64_t *shape, int64_t *out);

/* Aligned (64-byte) allocation of `n` floats; NULL with MAAS_ERR_NOMEM set
 * on failure. n == 0 returns a valid small block. */
float *maas_alloc_floats(int64_t n);
/* Frees a block of maas_alloc_floats (and only those; NULL is a no-op).
 * Large blocks may be kept in a small cache for the next allocation of the
 * same size (status.c). */
void maas_free(void *p);

/* ----------------------------------------------------------------- threads */

#define MAAS_PAR_THRESHOLD 32768
void maas_set_num_threads(int n);  /* also sets OpenBLAS's pool */
int maas_get_num_threads(void);
/* Deterministic mode (on unless the environment has MAAS_DETERMINISTIC=0,
 * read once): GEMMs give the same bits at any thread count, split by maas
 * over output blocks with OpenBLAS single-threaded (blas.c). Off: OpenBLAS
 * threads the products itself, a little faster on some shapes, and results
 * move in the last bits with the thread count. Set it between computations,
 * not while kernels run on other threads. */
void maas_set_deterministic(int on);
int maas_get_deterministic(void);

/* ------------------------------------------------------------------ tensor */

#define MAAS_MAX_DIMS 8

/* Element types. Kernels say which they accept; float32 is the default of
 * every constructor without a dtype argument. */
typedef enum {
    MAAS_F32 = 0,
    MAAS_I32,
    MAAS_I64,
    MAAS_I8,
    MAAS_U8,
    MAAS_BOOL,   /* one byte, 0 or 1 */
    MAAS_DTYPE_COUNT
} maas_dtype;

/* Bytes per element (0 for an invalid dtype) and the NumPy-style name
 * ("float32", "int64", ...; "?" for an invalid dtype). */
size_t maas_dtype_size(maas_dtype dt);
const char *maas_dtype_name(maas_dtype dt);

typedef struct maas_tensor maas_tensor;
struct maas_tensor {
    union {
        void *ptr;             /* the elements, of type `dtype` */
        float *data;           /* the same pointer, for float32 tensors */
    };
    maas_dtype dtype;
    int ndim;
    int64_t shape[MAAS_MAX_DIMS];
    int64_t size;              /* product of shape; 1 for 0-d */
    long refcount;             /* changed only by the thread that holds the GIL */
    int requires_grad;         /* recorded by any active tape when set */
    maas_tensor *base;         /* views: the tensor whose memory this shares */
    void *owner;               /* external owner of `data` (e.g. a NumPy array) */
    void (*release)(void *owner); /* called once when refcount drops to 0 */
    uint64_t version;          /* bumped by in-place writes (assign) */
};

/* New tensor owning a fresh, uninitialized (or zeroed) buffer. The
 * functions without a dtype make float32 tensors; *_like keep t's dtype. */
maas_tensor *maas_tensor_new_typed(maas_dtype dt, int ndim, const int64_t *shape);
maas_tensor *maas_tensor_zeros_typed(maas_dtype dt, int ndim, const int64_t *shape);
maas_tensor *maas_tensor_new(int ndim, const int64_t *shape);
maas_tensor *maas_tensor_zeros(int ndim, const int64_t *shape);
maas_tensor *maas_tensor_new_like(const maas_tensor *t);
maas_tensor *maas_tensor_zeros_like(const maas_tensor *t);
/* Wrap external memory; `release(owner)` is called when the last reference
 * goes. The caller guarantees data holds shape's product of floats. */
maas_tensor *maas_tensor_wrap(float *data, int ndim, const int64_t *shape,
                              void *owner, void (*release)(void *));
maas_tensor *maas_tensor_wrap_typed(void *data, maas_dtype dt, int ndim,
                                    const int64_t *shape, void *owner,
                                    void (*release)(void *));
/* A view sharing base's memory from element `offset` with a new shape (and
 * base's dtype). */
maas_tensor *maas_tensor_view(maas_tensor *base, int64_t offset, int ndim,
                              const int64_t *shape);
void maas_tensor_incref(maas_tensor *t);
void maas_tensor_decref(maas_tensor *t);
int maas_same_shape(const maas_tensor *a, const maas_tensor *b);
/* Writes "(2, 3)" into buf. */
const char *maas_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
/* ops/cast.c: out[i] = x[i] converted from dtype xdt to odt, for every
 * pair of dtypes, as NumPy's astype does it: float -> int truncates toward
 * zero (NaN gives 0; values beyond the target's range, +-inf included,
 * saturate at its limits, where NumPy's result is undefined); int -> int
 * wraps modulo 2^bits; int -> float rounds to nearest; anything -> bool is
 * x != 0 (NaN is true); bool -> anything is 0 or 1. out and x must not
 * overlap unless they are the same buffer of equal-size dtypes.
 * Overwrites out. */
maas_status maas_cast(void *out, maas_dtype odt, const void *x, maas_dtype xdt, int64_t n);
/* NumPy broadcasting of two shapes; MAAS_ERR_SHAPE names `op` and both. */
maas_status maas_broadcast_shape(const char *op, int an, const int64_t *as,
                                 int bn, const int64_t *bs, int *on, int64_t *os);

/* -------------------------------------------------------------------- blas */

typedef enum { MAAS_NO_TRANS = 0, MAAS_TRANS = 1 } maas_trans;
/* C (M,N) = alpha * op(A) op(B) + beta * C, row-major, leading dims given.
 * MAAS_ERR_VALUE when a size or leading dimension is negative, does not fit
 * BLAS's integer, or a leading dimension is shorter than its row. beta = 0
 * never reads C. */
maas_status maas_sgemm(maas_trans ta, maas_trans tb, int64_t M, int64_t N, int64_t K,
                       float alpha, const float *A, int64_t lda, const float *B,
                       int64_t ldb, float beta, float *C, int64_t ldc);
/* How many blocks deterministic mode splits an (M,N,K) product into on a
 * machine whose block cap is `max_blocks` (1: one call), and whether over
 * rows (*split_rows = 1) or columns of C: below 2^19 multiply-adds none, up
 * to 2^21 always two, above up to max_blocks of at least 2^20 each. The
 * thread count never enters: maas_sgemm passes maas_gemm_max_blocks(). */
int maas_sgemm_tiles(int64_t M, int64_t N, int64_t K, int max_blocks, int *split_rows);
int maas_gemm_max_blocks(void);        /* the block cap: the machine's processor count */
void maas_blas_set_num_threads(int n);  /* 1 in deterministic mode */
int maas_blas_get_num_threads(void);    /* the threads a large GEMM uses */
const char *maas_blas_name(void);

/* ---------------------------------------------------------------- op table
 *
 * How to add an op
 * ----------------
 * 1. Write its kernels in csrc/ops/<family>.c: maas_<op>_forward and
 *    maas_<op>_backward on plain pointers and sizes, with the shape
 *    contract in a comment (see "Kernel conventions" above); declare them
 *    in this header under their family.
 * 2. Add one entry to the table in csrc/optable.c: an id in maas_op_id
 *    below, the attribute struct (the arguments a caller gives first, then
 *    the sizes that infer derives from the input shapes), its field list
 *    (what the generic binding parses), and three functions:
 *      infer(node, outs, saved)  checks dtypes, shapes and attributes,
 *                                completes the derived attributes, and
 *                                gives the shape and dtype of each output
 *                                and each saved tensor (scratch the forward
 *                                fills and the backward reads);
 *      forward(node)             calls the forward kernel;
 *      backward(node, gout, gin) calls the backward kernel; gin[i] is NULL
 *                                when input i needs no gradient.
 *    The entry may live in optable.c or beside the kernels in the family's
 *    file (csrc/opdef.h: the shared helpers and MAAS_OPDEF); the table is
 *    one pointer per id.
 *    State: `state_in` marks inputs the forward updates in place (moving
 *    statistics); pass the variable's tensor as that input.
 *    Flags: MAAS_OPF_VIEW (the output shares the input's memory from
 *    outs[0].view_offset: reshape, slices), MAAS_OPF_RANDOM (the attribute
 *    struct starts with `uint64_t seed, stream;`, which a plan sets anew on
 *    every step).
 * 3. A Python wrapper in maas/ops.py (or a layer) calling
 *    `_core.op(_core.OP_<NAME>, inputs, *attributes)`.
 * 4. Tests: forward against float64 NumPy, gradients against central
 *    finite differences and PyTorch, every error message.
 * The tape (eager), the plan (compiled) and the binding all dispatch
 * through the table, so nothing else changes. */

#define MAAS_OP_MAX_IN 32
#define MAAS_OP_MAX_OUT 4
#define MAAS_OP_MAX_SAVED 4
#define MAAS_OP_ATTR_BYTES 256

typedef enum {
    MAAS_OP_UNARY = 0,   /* elementwise f(x) (maas_unary_op) */
    MAAS_OP_BINARY,      /* broadcasting a (op) b (maas_binary_op) */
    MAAS_OP_SOFTMAX,     /* softmax / log_softmax over an axis */
    MAAS_OP_REDUCE,      /* sum/mean/max/min over one axis or all */
    MAAS_OP_MATMUL,      /* batched matrix product, transposes folded in */
    MAAS_OP_DENSE,       /* x @ w + b */
    MAAS_OP_VIEW,        /* reshape / int index / contiguous slice: a view */
    MAAS_OP_ROWS,        /* strided slice of the first axis (a copy) */
    MAAS_OP_TAKE,        /* rows gathered by an int64 index tensor */
    MAAS_OP_TRANSPOSE,   /* swap the last two axes */
    MAAS_OP_CONCAT,      /* join along an axis */
    MAAS_OP_LOSS,        /* per-sample losses (maas_loss_op) */
    MAAS_OP_DROPOUT,     /* counter-based dropout (random) */
    MAAS_OP_RANDOM,      /* a new tensor of uniform or normal values (random) */
    MAAS_OP_CAST,        /* dtype conversion (NumPy's astype) */
    MAAS_OP_CONV2D,      /* NHWC convolution (ops/conv.c) */
    MAAS_OP_CONV2D_TRANSPOSE, /* its adjoint (ops/conv.c) */
    MAAS_OP_LAYERNORM,   /* layer normalization (ops/norm.c) */
    MAAS_OP_BATCHNORM,   /* batch normalization, moving statistics as state (ops/norm.c) */
    MAAS_OP_GROUPNORM,   /* group normalization (ops/norm.c) */
    MAAS_OP_POOL2D,      /* max / average pooling, NHWC (ops/pool.c) */
    MAAS_OP_PAD2D,       /* NHWC zero padding / cropping (ops/resample.c) */
    MAAS_OP_RESIZE2D,    /* NHWC nearest / bilinear resize (ops/resample.c) */
    MAAS_OP_PERMUTE,     /* any axis permutation (ops/resample.c) */
    MAAS_OP_TRANSFORM2D, /* per-sample NHWC affine/projective resampling (ops/resample.c) */
    MAAS_OP_EMBEDDING,   /* table rows by int32/int64 indices (ops/embedding.c) */
    MAAS_OP_RNN,         /* SimpleRNN / LSTM / GRU over a whole sequence (ops/rnn.c) */
    MAAS_OP_ATTENTION, MAAS_OP_ATTENTION_DROPOUT, /* fused SDPA (ops/attention.c) */
    MAAS_OP_QPACK,       /* int8 kernel packed for the int8 GEMM (qgemm.c) */
    MAAS_OP_QDENSE,      /* int8 dense: x quantized per row @ packed kernel (qgemm.c) */
    MAAS_OP_SPDENSE,     /* dense with a CSR kernel, pruned models (qgemm.c) */
    MAAS_OP_QCONV2D,     /* int8 conv: im2col rows quantized @ packed kernel (qconv.c) */
    MAAS_OP_QEMBEDDING,  /* int8 table rows dequantized by their scale (qconv.c) */
    MAAS_OP_COUNT
} maas_op_id;

typedef struct {
    maas_dtype dtype;
    int ndim;
    int64_t shape[MAAS_MAX_DIMS];
    int64_t view_offset;       /* MAAS_OPF_VIEW: element offset into in[0] */
} maas_tensor_spec;

/* One application of an op: its inputs, outputs, saved tensors and
 * attributes. A node on a tape or in a plan holds a reference to each
 * tensor it names. */
typedef struct maas_node {
    int op;                    /* maas_op_id */
    int nin, nout, nsaved;
    uint32_t nograd;           /* bit i set: input i never gets a gradient */
    maas_tensor *in[MAAS_OP_MAX_IN];
    maas_tensor *out[MAAS_OP_MAX_OUT];
    maas_tensor *saved[MAAS_OP_MAX_SAVED];
    _Alignas(8) unsigned char attr[MAAS_OP_ATTR_BYTES];
} maas_node;

typedef maas_status (*maas_infer_fn)(maas_node *nd, maas_tensor_spec *outs,
                                     maas_tensor_spec *saved);
typedef maas_status (*maas_forward_fn)(maas_node *nd);
/* Accumulates the input gradients of one node: gout[k] has out[k]'s shape
 * (NULL when no gradient reached that output), gin[i] is NULL when input i
 * needs no gradient, else it has in[i]'s shape and is added into. */
typedef maas_status (*maas_backward_fn)(const maas_node *nd,
                                        const maas_tensor *const *gout,
                                        maas_tensor *const *gin);

/* An attribute the generic binding parses: 'l' int64_t, 'd' double,
 * 'u' uint64_t, 'S' a shape (int64_t ndim then int64_t dims[8]). */
typedef struct {
    const char *name;
    char type;
    size_t offset;
} maas_attr_field;

#define MAAS_OPF_VIEW 1u
#define MAAS_OPF_RANDOM 2u

typedef struct {
    const char *name;
    int min_in, max_in;
    size_t attr_size;
    unsigned flags;
    const maas_attr_field *fields; /* given attributes, {NULL} terminated */
    maas_infer_fn infer;
    maas_forward_fn forward;
    maas_backward_fn backward;     /* NULL: no gradient */
    /* Bit i set: the forward updates input i in place (running statistics,
     * say a BatchNormalization's moving mean in training). Such an input
     * never gets a gradient; the tape and a plan's replay run the update
     * once per forward, in node order, so eager and compiled agree. */
    uint32_t state_in;
} maas_op_def;

/* The table (optable.c); NULL for an id out of range. */
const maas_op_def *maas_op_get(int op);

/* Eager execution of a node whose op, inputs and given attributes are set:
 * infers, allocates the outputs (views for view ops) and saved tensors
 * (new references in nd->out / nd->saved), and runs the forward kernel.
 * maas_op_setup does the first two only, maas_op_forward the last; the
 * binding runs maas_op_forward with the GIL released when the work is
 * large. On failure nothing is left allocated. */
maas_status maas_op_setup(maas_node *nd);
maas_status maas_op_forward(maas_node *nd);
maas_status maas_op_run(maas_node *nd);
/* Rough element count of a node's work (for the GIL-release threshold). */
double maas_op_work(const maas_node *nd);
/* Drops the references a node holds to its outputs and saved tensors
 * (not its inputs, which belong to the caller of maas_op_setup). */
void maas_node_release_outputs(maas_node *nd);

/* -------------------------------------------------------------------- tape */

typedef struct maas_tape maas_tape;
maas_tape *maas_tape_new(void);
void maas_tape_free(maas_tape *tape);   /* drops every reference it holds */
/* Makes the tape track t (as if it required grad). */
maas_status maas_tape_watch(maas_tape *tape, maas_tensor *t);
/* 1 if t is tracked by the tape: requires_grad, watched, or produced by a
 * recorded node. */
int maas_tape_tracks(const maas_tape *tape, const maas_tensor *t);
/* Records a node (copied; a reference to each tensor it names is taken). */
maas_status maas_tape_record(maas_tape *tape, const maas_node *node);
/* Gradients of sum(target) with respect to each source; grads[i] is a new
 * reference, or NULL when target does not depend on sources[i]. Touches no
 * Python object, so it may run without the GIL. */
maas_status maas_tape_gradient(maas_tape *tape, maas_tensor *target,
                               int nsources, maas_tensor *const *sources,
                               maas_tensor **grads);
int64_t maas_tape_size(const maas_tape *tape);
/* The recorded nodes, oldest first (borrowed; valid until the tape
 * changes). */
const maas_node *maas_tape_nodes(const maas_tape *tape, int64_t *n);

/* ------------------------------------------------------- ops: dense.c */

/* out (M,N) = op(a) @ op(b), op = transpose when ta/tb; a is (M,K) or (K,M),
 * b is (K,N) or (N,K). `batch` independent products of those sizes laid out
 * back to back (batch strides M*K, K*N, M*N). Overwrites out. */
maas_status maas_matmul_forward(float *out, const float *a, const float *b,
                                int64_t batch, int64_t M, int64_t N, int64_t K,
                                int ta, int tb);
/* ga += gout @ op(b)^T (shaped like a), gb += op(a)^T @ gout (shaped like b). */
maas_status maas_matmul_backward(float *ga, float *gb, const float *gout,
                                 const float *a, const float *b, int64_t batch,
                                 int64_t M, int64_t N, int64_t K, int ta, int tb);
/* out (N,U) = x (N,C) @ w (C,U) + bias (U); bias may be NULL. Overwrites. */
maas_status maas_dense_forward(float *out, const float *x, const float *w,
                               const float *bias, int64_t N, int64_t C, int64_t U);
/* gx += gout @ w^T ; gw += x^T @ gout ; gbias += column sums of gout. */
maas_status maas_dense_backward(float *gx, float *gw, float *gbias,
                                const float *gout, const float *x,
                                const float *w, int64_t N, int64_t C, int64_t U);

/* ------------------------------------------------------- ops: qgemm.c
 * int8 GEMM (the arithmetic and the packed layout: the top of qgemm.c). */
#define MAAS_QGEMM_MAX_K 131072
enum { MAAS_QISA_AUTO = 0, MAAS_QISA_REF, MAAS_QISA_AVX2, MAAS_QISA_AVX512VNNI, MAAS_QISA_COUNT };
int maas_qgemm_isa_supported(int isa);
int maas_qgemm_best_isa(void);
const char *maas_qgemm_isa_name(int isa);
int64_t maas_qgemm_row_bytes(int64_t K);   /* bytes per block of 16 columns */
int64_t maas_qgemm_blocks(int64_t U);      /* blocks of 16 columns */
/* q (K,U) int8, scale (U): symmetric abs-max per column (Keras). */
maas_status maas_quantize_weights(int8_t *q, float *scale, const float *w, int64_t K, int64_t U);
/* packed (blocks, row_bytes) from q (K,U); unpack is the inverse. */
maas_status maas_qgemm_pack(int8_t *packed, const int8_t *q, int64_t K, int64_t U);
maas_status maas_qgemm_unpack(int8_t *q, const int8_t *packed, int64_t K, int64_t U);
/* out (N,U) = dequant(quant(x (N,K)) @ packed) (+ bias); static_scale > 0
 * fixes the input scale, 0 quantizes each row by its abs-max. Overwrites. */
maas_status maas_qgemm_forward(float *out, const float *x, const int8_t *packed, const float *sw,
                               const float *bias, float static_scale, int64_t N, int64_t K,
                               int64_t U, int isa);
/* gx += gout @ (q / sw)^T ; gbias += column sums of gout (either NULL-able). */
maas_status maas_qgemm_backward(float *gx, float *gbias, const float *gout, const int8_t *packed,
                                const float *sw, int64_t N, int64_t K, int64_t U);
/* out (N,U) = x (N,K) @ W (+ bias), W as the CSR of W^T (rowptr (U+1),
 * cols (nnz) in [0,K), vals (nnz)); MAAS_ERR_VALUE on a malformed CSR. */
maas_status maas_spdense_forward(float *out, const float *x, const int64_t *rowptr,
                                 const int32_t *cols, const float *vals, const float *bias,
                                 int64_t N, int64_t K, int64_t U);

/* ------------------------------------------------ ops: activation.c */

typedef enum {
    MAAS_U_RELU = 0,
    MAAS_U_LEAKY_RELU,   /* alpha: negative slope */
    MAAS_U_ELU,          /* alpha */
    MAAS_U_GELU,         /* exact erf form */
    MAAS_U_GELU_TANH,    /* tanh approximation */
    MAAS_U_SIGMOID,
    MAAS_U_TANH,
    MAAS_U_SOFTPLUS,
    MAAS_U_SILU,
    MAAS_U_EXP,
    MAAS_U_LOG,
    MAAS_U_SQRT,
    MAAS_U_NEG,
    MAAS_U_ABS,
    MAAS_U_SQUARE,
    MAAS_U_POW_SCALAR,   /* x ** alpha */
    MAAS_U_RELU6,
    MAAS_U_COUNT
} maas_unary_op;

/* out[i] = f(x[i]); in place (out == x) is allowed. */
maas_status maas_unary_forward(maas_unary_op op, float *out, const float *x,
                               int64_t n, float alpha);
/* gx[i] += gout[i] * f'(x[i]); `out` is the forward output (some ops use it). */
maas_status maas_unary_backward(maas_unary_op op, float *gx, const float *gout,
                                const float *x, const float *out, int64_t n,
                                float alpha);

/* Softmax over the middle axis of x viewed as (outer, n, inner); max-
 * subtracted. log != 0 gives log_softmax. Overwrites out. */
maas_status maas_softmax_forward(float *out, const float *x, int64_t outer,
                                 int64_t n, int64_t inner, int log);
/* softmax:     gx += out * (gout - sum(gout * out))
 * log_softmax: gx += gout - exp(out) * sum(gout)   (sums over the axis) */
maas_status maas_softmax_backward(float *gx, const float *gout, const float *out,
                                  int64_t outer, int64_t n, int64_t inner, int log);

/* --------------------------------------------- ops: elementwise.c */

typedef enum {
    MAAS_B_ADD = 0, MAAS_B_SUB, MAAS_B_MUL, MAAS_B_DIV, MAAS_B_POW,
    MAAS_B_MAXIMUM, MAAS_B_MINIMUM,
    /* comparisons give 1.0f / 0.0f and have no gradient */
    MAAS_B_LT, MAAS_B_LE, MAAS_B_GT, MAAS_B_GE, MAAS_B_EQ, MAAS_B_NE,
    MAAS_B_COUNT
} maas_binary_op;

/* out = a (op) b with NumPy broadcasting; out must already have the
 * broadcast shape (maas_broadcast_shape). Overwrites out. */
maas_status maas_binary_forward(maas_binary_op op, maas_tensor *out,
                                const maas_tensor *a, const maas_tensor *b);
/* ga += reduce_to_a_shape(gout * d(out)/da), likewise gb; either may be
 * NULL. Reductions over broadcast axes run in a fixed order. */
maas_status maas_binary_backward(maas_binary_op op, maas_tensor *ga,
                                 maas_tensor *gb, const maas_tensor *gout,
                                 const maas_tensor *a, const maas_tensor *b,
                                 const maas_tensor *out);

/* -------------------------------------------------- ops: reduce.c */

typedef enum { MAAS_R_SUM = 0, MAAS_R_MEAN, MAAS_R_MAX, MAAS_R_MIN } maas_reduce_op;

/* out (outer, inner) = reduce over the middle axis of x (outer, n, inner).
 * n == 0: sum -> 0, mean -> NaN, max/min -> MAAS_ERR_VALUE. Overwrites. */
maas_status maas_reduce_forward(maas_reduce_op op, float *out, const float *x,
                                int64_t outer, int64_t n, int64_t inner);
/* gx += broadcast(gout) (sum), / n (mean), or into the first arg-max/min
 * position only (max/min; `out` is the forward output). */
maas_status maas_reduce_backward(maas_reduce_op op, float *gx, const float *gout,
                                 const float *x, const float *out, int64_t outer,
                                 int64_t n, int64_t inner);

/* --------------------------------------------------- ops: shape.c */

/* out = x with axes (d0, d1) of a (rows, cols) matrix swapped, `batch`
 * matrices back to back. Overwrites. */
maas_status maas_transpose2d(float *out, const float *x, int64_t batch,
                             int64_t rows, int64_t cols);
/* dst[i] += src[i] for n elements (the gradient of reshape and views). */
maas_status maas_accumulate(float *dst, const float *src, int64_t n);
/* Rows with a stride: out[r] = x[start + r*step] for `count` rows of
 * `row` elements each (negative steps allowed). Overwrites. */
maas_status maas_gather_rows(float *out, const float *x, int64_t start,
                             int64_t step, int64_t count, int64_t row);
/* gx[start + r*step] += gout[r]. */
maas_status maas_scatter_add_rows(float *gx, const float *gout, int64_t start,
                                  int64_t step, int64_t count, int64_t row);
/* Concatenation of k inputs along an axis, each viewed as (outer, n_j,
 * inner): out (outer, sum n_j, inner). Overwrites. The backward is
 * maas_concat_backward: gx_j += the matching slab of gout. */
maas_status maas_concat_forward(float *out, const float *const *xs,
                                const int64_t *ns, int k, int64_t outer,
                                int64_t inner);
maas_status maas_concat_backward(float *const *gxs, const float *gout,
                                 const int64_t *ns, int k, int64_t outer,
                                 int64_t inner);

/* ----------------------------------------------------- ops: loss.c */

typedef enum {
    MAAS_L_MSE = 0,
    MAAS_L_MAE,
    MAAS_L_BCE,          /* binary crossentropy */
    MAAS_L_CCE,          /* categorical crossentropy (one-hot / soft labels) */
    MAAS_L_SCCE,         /* sparse categorical: y_true holds class indices */
    MAAS_L_HINGE,        /* labels in {-1, 1}; {0, 1} labels are mapped */
    MAAS_L_COUNT
} maas_loss_op;

/* Per-sample losses as Keras computes them, reducing the last axis:
 * y_pred is (N, C); y_true is (N, C), or (N) class indices for SCCE.
 * out (N). from_logits applies to BCE, CCE and SCCE (fused and stable for
 * large logits); without it, predictions are probabilities clipped to
 * [1e-7, 1 - 1e-7] (CCE/SCCE first renormalize each row to sum to 1).
 *   mse   mean_c (y - p)^2           mae  mean_c |y - p|
 *   bce   mean_c -(y log p + (1-y) log(1-p))
 *   cce   -sum_c y log p             scce -log p[label]
 *   hinge mean_c max(1 - y p, 0)
 * SCCE labels outside [0, C) or not integral give MAAS_ERR_VALUE.
 * Overwrites out. */
maas_status maas_loss_forward(maas_loss_op op, float *out, const float *y_true,
                              const float *y_pred, int64_t N, int64_t C,
                              int from_logits);
/* gpred (N, C) += gout[n] * d loss[n] / d y_pred[n, c]. No gradient flows
 * to y_true. */
maas_status maas_loss_backward(maas_loss_op op, float *gpred, const float *gout,
                               const float *y_true, const float *y_pred,
                               int64_t N, int64_t C, int from_logits);

/* Sparse categorical crossentropy with integer labels: `labels` (N) of
 * dtype ldt (MAAS_I32, MAAS_I64, MAAS_I8 or MAAS_U8; MAAS_ERR_TYPE for
 * others) holds class indices in [0, C) (MAAS_ERR_VALUE naming the row
 * otherwise, checked before anything is written). The same per-row math as
 * maas_loss_forward(MAAS_L_SCCE), so float and integer labels give the
 * same bits. Forward overwrites out (N); backward accumulates gpred (N, C)
 * += gout[n] * d loss[n] / d y_pred[n, c]. */
maas_status maas_scce_forward_typed(float *out, const void *labels, maas_dtype ldt,
                                    const float *y_pred, int64_t N, int64_t C,
                                    int from_logits);
maas_status maas_scce_backward_typed(float *gpred, const float *gout, const void *labels,
                                     maas_dtype ldt, const float *y_pred, int64_t N,
                                     int64_t C, int from_logits);

/* -------------------------------------------------- ops: dropout.c */

/* A counter-based generator: the same (seed, stream, index) always gives
 * the same value, whatever the thread count or call order. */
uint64_t maas_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
/* Uniform in [0, 1) with 24 random bits. */
float maas_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
/* mask[i] = 0 with probability `rate`, else 1/(1-rate); out = x * mask.
 * 0 <= rate < 1 (MAAS_ERR_VALUE otherwise). Overwrites out and mask. */
maas_status maas_dropout_forward(float *out, float *mask, const float *x,
                                 int64_t n, float rate, uint64_t seed,
                                 uint64_t stream);
/* gx += gout * mask */
maas_status maas_dropout_backward(float *gx, const float *gout,
                                  const float *mask, int64_t n);
/* Fills out with uniform [lo, hi) or normal (mean, std) values. */
maas_status maas_rng_fill_uniform(float *out, int64_t n, float lo, float hi,
                                  uint64_t seed, uint64_t stream);
maas_status maas_rng_fill_normal(float *out, int64_t n, float mean, float std,
                                 uint64_t seed, uint64_t stream);

/* ---------------------------------------------------- ops: optim.c */

/* All updates are in place, one fused pass over n elements, with Keras's
 * formulas. `wd` is decoupled weight decay (p -= lr * wd * p, applied
 * first); 0 disables it. */

/* Keras SGD: v = momentum * v - lr * g;
 *   nesterov: p += momentum * v - lr * g;  else p += v.
 * With momentum == 0, p -= lr * g and `velocity` may be NULL. */
maas_status maas_sgd_update(float *p, float *velocity, const float *g, int64_t n,
                            float lr, float momentum, int nesterov, float wd);
/* Keras Adam/AdamW (step counts from 1):
 *   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
 *   p -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
 * amsgrad: vhat = max(vhat, v) is used in place of v (vhat non-NULL). */
maas_status maas_adam_update(float *p, float *m, float *v, float *vhat,
                             const float *g, int64_t n, float lr, float beta_1,
                             float beta_2, float eps, int64_t step, float wd);
/* Keras RMSprop:
 *   v = rho v + (1-rho) g^2 ; centered: a = rho a + (1-rho) g, d = v - a^2 + eps
 *   else d = v + eps ; inc = lr g / sqrt(d)
 *   momentum > 0: mom = momentum mom + inc, p -= mom ; else p -= inc
 * `avg` is used only when centered, `mom` only when momentum > 0. */
maas_status maas_rmsprop_update(float *p, float *v, float *avg, float *mom,
                                const float *g, int64_t n, float lr, float rho,
                                float momentum, float eps, int centered, float wd);
/* Keras Adagrad: acc += g^2 ; p -= lr g / sqrt(acc + eps) (eps inside the
 * root; the caller starts acc at initial_accumulator_value). */
maas_status maas_adagrad_update(float *p, float *acc, const float *g, int64_t n, float lr,
                                float eps, float wd);
/* Keras Adadelta: acc_grad = rho acc_grad + (1-rho) g^2 ;
 *   d = -sqrt(acc_delta + eps) / sqrt(acc_grad + eps) g ;
 *   acc_delta = rho acc_delta + (1-rho) d^2 ; p += lr d */
maas_status maas_adadelta_update(float *p, float *acc_grad, float *acc_delta, const float *g,
                                 int64_t n, float lr, float rho, float eps, float wd);
/* Keras Adamax (step counts from 1): m = b1 m + (1-b1) g ; u = max(b2 u, |g|) ;
 *   p -= lr / (1-b1^t) m / (u + eps) */
maas_status maas_adamax_update(float *p, float *m, float *u, const float *g, int64_t n,
                               float lr, float beta_1, float beta_2, float eps, int64_t step,
                               float wd);
/* Keras Nadam (step counts from 1): u_s = b1 (1 - 0.5 * 0.96^s); `u_product`
 * is prod_{s=1..t} u_s, kept by the caller (one value per optimizer step).
 *   m, v as Adam ; m_hat = u_{t+1} m / (1 - u_product u_{t+1}) + (1-u_t) g / (1 - u_product)
 *   p -= lr m_hat / (sqrt(v / (1-b2^t)) + eps) */
maas_status maas_nadam_update(float *p, float *m, float *v, const float *g, int64_t n,
                              float lr, float beta_1, float beta_2, float eps, int64_t step,
                              double u_product, float wd);
/* Keras Lion: p -= lr sign(b1 m + (1-b1) g) ; m = b2 m + (1-b2) g */
maas_status maas_lion_update(float *p, float *m, const float *g, int64_t n, float lr,
                             float beta_1, float beta_2, float wd);
/* Keras Ftrl (lr > 0, lr_power <= 0, strengths >= 0), with k = -lr_power:
 *   acc' = acc + g^2 ; linear += g + 2 l2_shrinkage p - (acc'^k - acc^k) / lr p
 *   p = (clip(linear, -l1, l1) - linear) / (acc'^k / lr + 2 (l2 + beta / (2 lr)))
 *   acc = acc' */
maas_status maas_ftrl_update(float *p, float *acc, float *linear, const float *g, int64_t n,
                             float lr, float lr_power, float l1, float l2, float l2_shrinkage,
                             float beta, float wd);
/* Sum of squares in double, fixed order (for clipnorm). */
double maas_sum_squares(const float *x, int64_t n);
/* x *= s */
maas_status maas_scale_inplace(float *x, int64_t n, float s);
/* x = clip(x, lo, hi) */
maas_status maas_clip_inplace(float *x, int64_t n, float lo, float hi);

/* ---------------------------------------------------------------- plan.c */

/* A compiled plan: the node list of one traced step (a tape's), frozen. The
 * tensors the trace made are the plan's buffers, allocated once; one call
 * replays the forward pass, the backward pass into the parameters'
 * gradients, clipping and the optimizer update, touching no Python object.
 * The plan runs the same kernels in the same order as the eager path, so
 * both give the same bits. Shapes are fixed: a batch of another size needs
 * a plan of its own (the Python engine keeps one per batch size). */
typedef struct maas_plan maas_plan;

typedef enum { MAAS_OPT_SGD = 0, MAAS_OPT_ADAM, MAAS_OPT_RMSPROP } maas_optim_kind;

typedef struct {
    maas_optim_kind kind;
    float momentum;            /* SGD, RMSprop */
    int nesterov;              /* SGD */
    float beta_1, beta_2, eps; /* Adam (eps also RMSprop) */
    int amsgrad;               /* Adam */
    float rho;                 /* RMSprop */
    int centered;              /* RMSprop */
    float weight_decay;        /* decoupled; 0 = none */
    double clipnorm, clipvalue, global_clipnorm; /* 0 = off; double as in Python */
} maas_optim_config;

/* Builds a plan from `nnodes` recorded nodes. `inputs`: the placeholder
 * tensors the caller refills before each run (leaves: no node may produce
 * one). `outputs`: tensors whose values the caller reads after a run.
 * `loss`: a one-element tensor to differentiate, or NULL for a forward-only
 * plan. `params`: the variables whose gradients the plan computes (named
 * twice, counted once: their gradients add). Only the nodes that the
 * outputs and the loss depend on are kept. Every output, the loss and each
 * parameter the loss depends on must be reachable (MAAS_ERR_VALUE). */
maas_status maas_plan_build(maas_plan **out, int64_t nnodes, const maas_node *nodes,
                            int ninputs, maas_tensor *const *inputs,
                            int noutputs, maas_tensor *const *outputs,
                            maas_tensor *loss, int nparams,
                            maas_tensor *const *params);
void maas_plan_free(maas_plan *plan);
int64_t maas_plan_num_nodes(const maas_plan *plan);
/* Random nodes, in execution order; maas_plan_forward takes a (seed,
 * stream) pair for each. */
int maas_plan_num_random(const maas_plan *plan);
int maas_plan_num_inputs(const maas_plan *plan);
int maas_plan_num_outputs(const maas_plan *plan);
/* Borrowed; NULL when i is out of range. */
maas_tensor *maas_plan_input(const maas_plan *plan, int i);
maas_tensor *maas_plan_output(const maas_plan *plan, int i);
maas_tensor *maas_plan_loss(const maas_plan *plan);           /* borrowed */
/* Parameter i's gradient after maas_plan_backward (borrowed; NULL when the
 * loss does not depend on it). */
maas_tensor *maas_plan_grad(const maas_plan *plan, int i);
/* Every parameter gradient of maas_plan_grad, end to end in parameter
 * order, as one float32 vector (borrowed; NULL when no parameter gets a
 * gradient): each parameter's gradient is a view into it. */
maas_tensor *maas_plan_flat_grad(const maas_plan *plan);
/* The optimizer the update applies: slots[3*i .. 3*i+2] are parameter i's
 * state tensors (SGD {velocity}, Adam {m, v, vhat}, RMSprop {v, avg, mom};
 * NULL where none), decay[i] 1 when weight decay applies to it. */
maas_status maas_plan_set_optimizer(maas_plan *plan, const maas_optim_config *cfg,
                                    maas_tensor *const *slots, const int *decay);
/* Replays the forward pass; keys holds 2 * maas_plan_num_random values. */
maas_status maas_plan_forward(maas_plan *plan, const uint64_t *keys);
/* Gradients of the loss into the parameters' gradient buffers (zeroed
 * first). */
maas_status maas_plan_backward(maas_plan *plan);
/* Clipping (clipvalue, clipnorm, global_clipnorm) and the optimizer update
 * of every parameter with a gradient, as maas.optimizers does it. */
maas_status maas_plan_update(maas_plan *plan, float lr, int64_t step);
/* Inference plans (no loss): folds each inference-mode batch normalization
 * over the last axis into the conv2d or dense node that alone feeds it
 * (kernel scaled per output channel, shift into the bias; recomputed by
 * the next forward whenever a source's version changes) and drops it from
 * the node list. *nfolded: how many. A plan with a loss is left as it is. */
maas_status maas_plan_fold_batchnorm(maas_plan *plan, int *nfolded);
/* ops/norm.c: whether a batch normalization node may be folded (see above). */
int maas_batchnorm_foldable(const maas_node *nd, double *eps, int *has_gamma, int *has_beta);

/* -------------------------------------------------------------- format.c */

/* The model file is a safetensors file: an 8-byte little-endian header
 * length, a JSON header {name: {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {str: str}}, then the raw little-endian data. maas
 * reads and writes the dtypes it has under safetensors's names (F32, I32,
 * I64, I8, U8, BOOL; a BOOL byte must be 0 or 1), pads the header with spaces so the data
 * starts 64-byte aligned, and replaces the target atomically (temporary
 * file in the same folder, fsync, rename, fsync of the folder).
 *
 * A file is untrusted: every malformed header, truncation, dtype maas
 * lacks (F16, BF16, F64, ...: the message names it), size mismatch, overlap, gap or out-of-bounds offset gives
 * MAAS_ERR_FORMAT with a message saying what is wrong. Headers above
 * MAAS_ST_HEADER_CAP bytes are refused. I/O failures give MAAS_ERR_IO
 * (errno in maas_st_last_errno()). */
#define MAAS_ST_HEADER_CAP (100 * 1000 * 1000)

typedef struct {
    const char *name;      /* UTF-8, NUL-terminated (may hold NULs: use name_len) */
    size_t name_len;
    const char *dtype;     /* the header's name ("F32", "I64", ...) */
    size_t dtype_len;
    maas_dtype dt;         /* the same as a maas dtype once loaded */
    int ndim;
    int64_t shape[MAAS_MAX_DIMS];
    int64_t begin, end;    /* byte offsets in the data section */
} maas_st_info;

typedef struct maas_st_file maas_st_file;

/* Writes tensors[i] under names[i] (name_lens[i] bytes of UTF-8, unique, not
 * "__metadata__"), in the given order, with `metadata_json` (a JSON object
 * of string -> string, or NULL for none) as "__metadata__". */
maas_status maas_st_save(const char *path, int64_t n, const char *const *names,
                         const size_t *name_lens, maas_tensor *const *tensors,
                         const char *metadata_json);
/* Checks that json[0..len) is a JSON object of string -> string with no
 * duplicate keys (MAAS_ERR_FORMAT otherwise). */
maas_status maas_st_check_metadata(const char *json, size_t len);
/* Opens, validates and loads a file. use_mmap != 0: the file is mapped
 * (private, copy-on-write: writes to a tensor never reach the file) and
 * each tensor wraps the mapping without copying (a tensor whose offset is
 * not a multiple of its element size is copied instead); the mapping is unmapped
 * when the file and every tensor are released. use_mmap == 0: each tensor
 * is a copy read with pread. Everything is read within this call, so a
 * binding may release the GIL around it. */
maas_status maas_st_load(const char *path, int use_mmap, maas_st_file **out);
void maas_st_close(maas_st_file *f);
/* Entries sorted by data offset, so that the tensors in order cover the
 * data section exactly. */
int64_t maas_st_count(const maas_st_file *f);
const maas_st_info *maas_st_info_at(const maas_st_file *f, int64_t i);
/* Borrowed; maas_tensor_incref to keep it beyond maas_st_close. */
maas_tensor *maas_st_tensor(const maas_st_file *f, int64_t i);
/* The header's __metadata__ as JSON text ("{}" when absent). */
const char *maas_st_metadata(const maas_st_file *f, size_t *len);
/* The whole-file mapping (NULL when copied) and where the data starts. */
const void *maas_st_mapping(const maas_st_file *f, size_t *len);
int64_t maas_st_data_start(const maas_st_file *f);
/* errno of the last MAAS_ERR_IO from this thread's format call (0 if none). */
int maas_st_last_errno(void);

#ifdef __cplusplus
}
#endif
#endif /* MAAS_H */
