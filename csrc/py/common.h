/* common.h -- shared declarations of the maas._core binding (csrc/py/).
 * The binding parses arguments, checks shapes with the GIL held, allocates
 * outputs, releases the GIL around kernels that can take long, records the
 * op on active tapes, and maps a maas_status to a Python exception. */
#ifndef MAAS_PY_COMMON_H
#define MAAS_PY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL maas_ARRAY_API
#ifndef MAAS_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../maas.h"

typedef struct {
    PyObject_HEAD
    maas_tensor *t;
    PyObject *grad;     /* set by GradientTape.gradient for its sources */
    PyObject *weakrefs;
} TensorObject;

typedef struct {
    PyTypeObject *tensor_type;
    PyTypeObject *tape_type;
} module_state;

extern PyModuleDef maas_core_module;

static inline module_state *state_of_module(PyObject *m)
{
    return (module_state *)PyModule_GetState(m);
}
/* The state reached from an object's type (for slots with no module arg). */
module_state *state_of_type(PyTypeObject *tp);

/* errors.c: raise the exception matching a core status; returns NULL. */
PyObject *raise_status(maas_status s);

/* tensor_type.c */
int tensor_type_init(PyObject *module, module_state *st);
int is_tensor(module_state *st, PyObject *o);
/* Wraps a core tensor in a new Tensor object (steals the reference; on
 * failure the tensor is released). */
PyObject *tensor_wrap(module_state *st, maas_tensor *t);
/* A new float32 core reference for any array-like (a float32 Tensor is
 * shared, a float32 C-contiguous writeable array is wrapped without
 * copying, other numeric data is converted); a Tensor of another dtype is
 * refused (TypeError: "this op: expected a float32 tensor, received ...").
 * NULL with TypeError/ValueError set. as_float_tensor(st, o, NULL). */
maas_tensor *as_tensor(module_state *st, PyObject *o);
/* The same, but a Tensor of another dtype is converted too (a float32
 * copy): for inputs Keras casts itself, such as a loss's y_true
 * (`ops.cast(y_true, y_pred.dtype)` in every Keras loss). */
maas_tensor *as_float_converted(module_state *st, PyObject *o);
/* The same for a float32 kernel's input, naming the op (`opname`, or "this
 * op" when NULL) in the TypeError a Tensor of another dtype gets: a Tensor
 * is shared only when it is float32; other array-likes (Python numbers,
 * lists, arrays of any numeric dtype) are converted to float32. */
maas_tensor *as_float_tensor(module_state *st, PyObject *o, const char *opname);
/* A new core reference of dtype `dtype` (a maas_dtype, or -1 to keep a
 * Tensor's dtype and infer an array's: float64 -> float32, int16/uint16 ->
 * int32, uint32 -> int64). Zero-copy when the data already is a Tensor or a
 * C-contiguous native array of that dtype and !force_copy; otherwise a
 * converted copy (maas_cast for a Tensor, NumPy's astype for others). */
maas_tensor *as_typed_tensor(module_state *st, PyObject *o, int dtype, int force_copy);
/* PyArg "O&" converter: "float32", np.int64, np.dtype("uint8"), ... ->
 * maas_dtype; TypeError naming the dtype maas lacks (float64, ...). */
int dtype_converter(PyObject *o, maas_dtype *out);
/* NumPy's type number of a maas dtype. */
int npy_type_of_dtype(maas_dtype dt);
#define TENSOR(o) (((TensorObject *)(o))->t)

/* bind_ops.c: op entry points shared with the Tensor's number slots. */
PyObject *op_binary(module_state *st, maas_binary_op op, PyObject *a, PyObject *b);
PyObject *op_unary(module_state *st, maas_unary_op op, PyObject *x, float alpha);
PyObject *op_matmul(module_state *st, PyObject *a, PyObject *b, int ta, int tb);
PyObject *op_reshape(module_state *st, PyObject *x, PyObject *shape);
PyObject *op_getitem(module_state *st, PyObject *x, PyObject *key);
PyObject *op_transpose(module_state *st, PyObject *x);
PyObject *op_reduce(module_state *st, maas_reduce_op op, PyObject *x, PyObject *axis,
                    int keepdims);
extern PyMethodDef bind_ops_methods[];
/* Runs one node of table op `op` over `nin` inputs (new references, released
 * here) with the given attribute block: infer, allocate, forward (GIL
 * released when large), record on active tapes. New reference to the first
 * output, or NULL with an exception. */
maas_tensor *run_op(int op, int nin, maas_tensor **in, const void *attr, size_t attr_size);
/* The optimizer bindings' shared pieces (bind_ops.c, bind_optim2.c):
 * inplace_arg: a float32 Tensor written in place, as a new reference held
 * for the call (TypeError otherwise); check_slots: -1 with ValueError when a
 * non-NULL slot's shape differs from p's; finish_update: releases g and
 * refs (refs[0] the variable, whose version it bumps on success) and
 * reports a shape error already set or the kernel's status. */
maas_tensor *inplace_arg(module_state *st, PyObject *o, const char *op, const char *what);
int check_slots(const char *op, maas_tensor *p, maas_tensor *const *slots,
                const char *const *names, int n);
PyObject *finish_update(maas_tensor *g, maas_tensor **refs, int nrefs, int bad, maas_status s);

/* bind_tape.c */
int tape_type_init(PyObject *module, module_state *st);
/* 1 when some tape is recording on this thread. */
int tapes_active(void);
/* Records nd on each active tape that tracks one of its inputs. The node's
 * references are borrowed (each tape takes its own). -1 with an exception. */
int record_node(const maas_node *nd);

/* Tracing (bind_tape.c): notes that the step being traced cannot be frozen
 * into a plan (a value read into Python, an in-place write). */
void trace_note(const char *what);
extern PyMethodDef bind_trace_methods[];
/* The core tape of a maas._core.Tape (NULL with an exception when it is not
 * one, is released, or is busy). */
maas_tape *tape_core(PyObject *o, module_state *st);

/* bind_plan.c */
int plan_type_init(PyObject *module, module_state *st);

/* bind_format.c: save_safetensors, load_safetensors */
extern PyMethodDef bind_format_methods[];

/* bind_cast.c: cast (typed tensors) and scce_int (integer labels); to move
 * onto the op table */
extern PyMethodDef bind_cast_methods[];

/* Runs `stmt` with the GIL released when `big` is true. */
#define MAAS_NOGIL_IF(big, stmt)                                               \
    do {                                                                       \
        if (big) {                                                             \
            Py_BEGIN_ALLOW_THREADS stmt;                                       \
            Py_END_ALLOW_THREADS                                               \
        } else {                                                               \
            stmt;                                                              \
        }                                                                      \
    } while (0)

/* Work size above which a kernel runs without the GIL. */
#define MAAS_NOGIL_WORK 16384

#endif
