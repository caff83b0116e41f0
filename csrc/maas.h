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
 *   autodiff.c        the tape: reverse-mode recording and gradient
 *   grad_fns.c        the backward function of each recorded op
 *   plan.c            compiled plans: a whole training step in one call
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
/* How many blocks deterministic mode splits an (M,N,K) product into with
 * `nthreads` threads (1: one call), and whether over rows (*split_rows = 1)
 * or columns of C: below 2^19 multiply-adds none, up to 2^21 always two
 * (whatever nthreads), above up to nthreads of at least 2^20 each. */
int maas_sgemm_tiles(int64_t M, int64_t N, int64_t K, int nthreads, int *split_rows);
void maas_blas_set_num_threads(int n);  /* 1 in deterministic mode */
int maas_blas_get_num_threads(void);    /* the threads a large GEMM uses */
const char *maas_blas_name(void);

/* -------------------------------------------------------------------- tape */

#define MAAS_NODE_MAX_IN 8

typedef struct maas_node maas_node;
/* Accumulates the input gradients of one node. gin[i] is NULL when input i
 * needs no gradient; otherwise it has input i's shape and is added into. */
typedef maas_status (*maas_backward_fn)(const maas_node *node,
                                         const maas_tensor *gout,
                                         maas_tensor *const *gin);
struct maas_node {
    maas_backward_fn backward;
    const char *name;
    int ninputs;
    maas_tensor *in[MAAS_NODE_MAX_IN];
    maas_tensor *out;
    maas_tensor *saved;        /* an extra tensor the backward needs, or NULL */
    double f[4];               /* float attributes (alpha, rate, ...) */
    int64_t i[8];              /* integer attributes (axis sizes, flags, ...) */
};

typedef struct maas_tape maas_tape;
maas_tape *maas_tape_new(void);
void maas_tape_free(maas_tape *tape);   /* drops every reference it holds */
/* Makes the tape track t (as if it required grad). */
maas_status maas_tape_watch(maas_tape *tape, maas_tensor *t);
/* 1 if t is tracked by the tape: requires_grad, watched, or produced by a
 * recorded node. */
int maas_tape_tracks(const maas_tape *tape, const maas_tensor *t);
/* Records a node (copied; references to in/out/saved are taken). */
maas_status maas_tape_record(maas_tape *tape, const maas_node *node);
/* Gradients of sum(target) with respect to each source; grads[i] is a new
 * reference, or NULL when target does not depend on sources[i]. Touches no
 * Python object, so it may run without the GIL. */
maas_status maas_tape_gradient(maas_tape *tape, maas_tensor *target,
                               int nsources, maas_tensor *const *sources,
                               maas_tensor **grads);
int64_t maas_tape_size(const maas_tape *tape);

/* ------------------------------------------------------------ grad_fns.c */

/* Backward functions for recorded nodes; the attribute layout each expects:
 *   unary      i: op              f: alpha         in: x
 *   softmax    i: outer n inner log                in: x
 *   binary     i: op                               in: a b
 *   reduce     i: op outer n inner                 in: x
 *   matmul     i: batch M N K ta tb                in: a b
 *   dense      i: N C U                            in: x w [bias]
 *   view       i: offset (the output is a view or reshape of in[0] from there)
 *   rows       i: start step count row             in: x  (strided row gather)
 *   take       i: row   saved: row indices (float) in: x  (rows gathered by index)
 *   transpose  i: batch rows cols                  in: x
 *   concat     i: outer inner, n_j in i[2..]       in: x_0 .. x_{k-1} (k <= 6)
 *   loss       i: op N C from_logits  saved: y_true in: y_pred
 *   dropout    saved: mask                         in: x
 */
maas_status maas_grad_unary(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_softmax(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_binary(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_reduce(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_matmul(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_dense(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_view(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_rows(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_take(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_transpose(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_concat(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_loss(const maas_node *, const maas_tensor *, maas_tensor *const *);
maas_status maas_grad_dropout(const maas_node *, const maas_tensor *, maas_tensor *const *);

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
/* Sum of squares in double, fixed order (for clipnorm). */
double maas_sum_squares(const float *x, int64_t n);
/* x *= s */
maas_status maas_scale_inplace(float *x, int64_t n, float s);
/* x = clip(x, lo, hi) */
maas_status maas_clip_inplace(float *x, int64_t n, float lo, float hi);

/* ---------------------------------------------------------------- plan.c */

/* A compiled plan: a chain of layer kernels over (N, features) activations
 * with every buffer allocated once for the largest batch seen. One call to
 * maas_plan_train_step runs forward, the loss, backward, regularization,
 * gradient clipping and the optimizer update, touching no Python object.
 * The plan holds references to the weights and optimizer slots it updates
 * in place, so the eager path and the plan share the same state. */
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
    float clipnorm, clipvalue, global_clipnorm; /* 0 = off */
} maas_optim_config;

/* A plan over inputs of `in_features` columns. */
maas_plan *maas_plan_new(int64_t in_features);
void maas_plan_free(maas_plan *plan);
/* out = x @ w + b; w (C, U) with C the current width. `slots_w`/`slots_b`
 * hold the optimizer's state tensors for w and b (3 each, NULL where the
 * optimizer needs none: SGD {velocity}, Adam {m, v, vhat}, RMSprop {v,
 * avg, mom}). l1/l2: Keras regularizer factors on w and b. `decay_w/b`:
 * 1 when weight decay applies to that tensor. trainable 0 freezes both. */
maas_status maas_plan_add_dense(maas_plan *plan, maas_tensor *w, maas_tensor *b,
                                int trainable, const float reg[4],
                                maas_tensor *const slots_w[3],
                                maas_tensor *const slots_b[3], const int decay[2]);
maas_status maas_plan_add_unary(maas_plan *plan, maas_unary_op op, float alpha);
maas_status maas_plan_add_softmax(maas_plan *plan, int log);
maas_status maas_plan_add_dropout(maas_plan *plan, float rate);
/* Graphs: each step reads the output of the step added before it unless
 * maas_plan_set_input names another step (-1: the plan's input x); a merge
 * reads two steps' outputs (same width; concat joins the feature axis). */
typedef enum { MAAS_MERGE_ADD = 0, MAAS_MERGE_SUB, MAAS_MERGE_MUL, MAAS_MERGE_CONCAT } maas_merge_op;
maas_status maas_plan_set_input(maas_plan *plan, int step);
maas_status maas_plan_add_merge(maas_plan *plan, maas_merge_op op, int a, int b);
/* The step the next step would read (the last added, or set_input's). */
int maas_plan_cursor(const maas_plan *plan);
maas_status maas_plan_set_loss(maas_plan *plan, maas_loss_op op, int from_logits);
maas_status maas_plan_set_optimizer(maas_plan *plan, const maas_optim_config *cfg);
int64_t maas_plan_out_features(const maas_plan *plan);
/* One training step on a batch: x (N, in), y (N, out) or (N) labels for
 * SCCE, sw (N) sample weights or NULL. The loss is Keras's
 * sum_over_batch_size mean plus the regularization terms. */
maas_status maas_plan_train_step(maas_plan *plan, const float *x, const float *y,
                                 const float *sw, int64_t N, float lr, int64_t step,
                                 uint64_t seed, uint64_t stream, double *loss);
/* Forward only (dropout off): out (N, out_features), in chunks of at most
 * `chunk` rows. */
maas_status maas_plan_predict(maas_plan *plan, const float *x, int64_t N,
                              int64_t chunk, float *out);
/* The last train step's predictions (N, out_features), valid until the next
 * call. */
const float *maas_plan_last_output(const maas_plan *plan, int64_t *N);

/* -------------------------------------------------------------- format.c */

/* The model file is a safetensors file: an 8-byte little-endian header
 * length, a JSON header {name: {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {str: str}}, then the raw little-endian data. maas
 * writes float32 ("F32") tensors, pads the header with spaces so the data
 * starts 64-byte aligned, and replaces the target atomically (temporary
 * file in the same folder, fsync, rename, fsync of the folder).
 *
 * A file is untrusted: every malformed header, truncation, dtype other
 * than F32, size mismatch, overlap, gap or out-of-bounds offset gives
 * MAAS_ERR_FORMAT with a message saying what is wrong. Headers above
 * MAAS_ST_HEADER_CAP bytes are refused. I/O failures give MAAS_ERR_IO
 * (errno in maas_st_last_errno()). */
#define MAAS_ST_HEADER_CAP (100 * 1000 * 1000)

typedef struct {
    const char *name;      /* UTF-8, NUL-terminated (may hold NULs: use name_len) */
    size_t name_len;
    const char *dtype;     /* always "F32" once loaded */
    size_t dtype_len;
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
 * each tensor wraps the mapping without copying; the mapping is unmapped
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
