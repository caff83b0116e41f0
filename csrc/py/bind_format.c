/* bind_format.c -- _core.save_safetensors / _core.load_safetensors: the
 * model file's reader and writer (csrc/format.c), with the GIL released
 * around all file I/O. MAAS_ERR_FORMAT becomes maas.errors.ModelFormatError,
 * MAAS_ERR_IO an OSError of the right subclass (FileNotFoundError, ...). */
#include "common.h"

static PyObject *raise_format_status(maas_status s)
{
    int err = maas_st_last_errno();
    if (s == MAAS_ERR_IO && err != 0) {
        /* OSError(errno, message) picks FileNotFoundError etc.; the message
         * names the file already */
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", err, maas_last_error());
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    return raise_status(s);
}

static PyObject *save_safetensors(PyObject *module, PyObject *args)
{
    PyObject *path = NULL, *items, *seq = NULL, *meta_obj = Py_None, *r = NULL;
    const char **names = NULL;
    size_t *lens = NULL;
    maas_tensor **ts = NULL;
    Py_ssize_t n = 0, got = 0;
    if (!PyArg_ParseTuple(args, "O&O|O:save_safetensors", PyUnicode_FSConverter, &path, &items,
                          &meta_obj))
        return NULL;
    module_state *st = state_of_module(module);
    const char *meta = NULL;
    if (meta_obj != Py_None) {
        Py_ssize_t mlen;
        if (!PyUnicode_Check(meta_obj)) {
            PyErr_SetString(PyExc_TypeError, "save_safetensors: metadata must be a JSON string or None");
            goto done;
        }
        if (!(meta = PyUnicode_AsUTF8AndSize(meta_obj, &mlen)))
            goto done;
        if ((size_t)mlen != strlen(meta)) {
            PyErr_SetString(PyExc_ValueError, "save_safetensors: metadata contains a NUL character");
            goto done;
        }
    }
    /* our own tuple: the caller's list may change while the GIL is released */
    if (!(seq = PySequence_Tuple(items)))
        goto done;
    n = PyTuple_GET_SIZE(seq);
    names = PyMem_Calloc(n ? (size_t)n : 1, sizeof *names);
    lens = PyMem_Calloc(n ? (size_t)n : 1, sizeof *lens);
    ts = PyMem_Calloc(n ? (size_t)n : 1, sizeof *ts);
    if (!names || !lens || !ts) {
        PyErr_NoMemory();
        goto done;
    }
    for (got = 0; got < n; got++) {
        PyObject *item = PyTuple_GET_ITEM(seq, got);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "save_safetensors: items must be (name: str, tensor) tuples");
            goto done;
        }
        Py_ssize_t len;
        /* the UTF-8 buffer lives as long as the str, which seq keeps alive */
        if (!(names[got] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 0), &len)))
            goto done;
        lens[got] = (size_t)len;
        PyObject *t = PyTuple_GET_ITEM(item, 1);
        if (!is_tensor(st, t)) {
            PyErr_Format(PyExc_TypeError, "save_safetensors: the value of '%U' must be a maas Tensor, not %.100s",
                         PyTuple_GET_ITEM(item, 0), Py_TYPE(t)->tp_name);
            goto done;
        }
        maas_tensor_incref(TENSOR(t));
        ts[got] = TENSOR(t);
    }
    maas_status s;
    const char *cpath = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    s = maas_st_save(cpath, (int64_t)n, names, lens, ts, meta);
    Py_END_ALLOW_THREADS
    if (s != MAAS_OK) {
        raise_format_status(s);
        goto done;
    }
    r = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        maas_tensor_decref(ts[i]);
    PyMem_Free(names);
    PyMem_Free(lens);
    PyMem_Free(ts);
    Py_XDECREF(seq);
    Py_XDECREF(path);
    return r;
}

static PyObject *load_safetensors(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "mmap", NULL};
    PyObject *path = NULL, *dict = NULL, *meta = NULL, *r = NULL;
    int use_mmap = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|p:load_safetensors", kwlist, PyUnicode_FSConverter,
                                     &path, &use_mmap))
        return NULL;
    module_state *st = state_of_module(module);
    maas_st_file *f = NULL;
    maas_status s;
    const char *cpath = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    s = maas_st_load(cpath, use_mmap, &f);
    Py_END_ALLOW_THREADS
    if (s != MAAS_OK) {
        raise_format_status(s);
        goto done;
    }
    if (!(dict = PyDict_New()))
        goto done;
    for (int64_t i = 0; i < maas_st_count(f); i++) {
        const maas_st_info *e = maas_st_info_at(f, i);
        PyObject *key = PyUnicode_DecodeUTF8(e->name, (Py_ssize_t)e->name_len, "strict");
        if (!key)
            goto done;
        maas_tensor *t = maas_st_tensor(f, i);
        maas_tensor_incref(t);
        PyObject *v = tensor_wrap(st, t); /* steals t */
        int rc = v ? PyDict_SetItem(dict, key, v) : -1;
        Py_DECREF(key);
        Py_XDECREF(v);
        if (rc < 0)
            goto done;
    }
    size_t mlen;
    const char *m = maas_st_metadata(f, &mlen);
    if (!(meta = PyUnicode_DecodeUTF8(m, (Py_ssize_t)mlen, "strict")))
        goto done;
    r = PyTuple_Pack(2, dict, meta);
done:
    maas_st_close(f); /* the tensors keep the mapping alive */
    Py_XDECREF(dict);
    Py_XDECREF(meta);
    Py_XDECREF(path);
    return r;
}

static PyObject *check_safetensors_metadata(PyObject *module, PyObject *arg)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s)
        return NULL;
    maas_status st = maas_st_check_metadata(s, (size_t)n);
    return st == MAAS_OK ? Py_NewRef(Py_None) : raise_status(st);
}

PyMethodDef bind_format_methods[] = {
    {"save_safetensors", save_safetensors, METH_VARARGS,
     "save_safetensors(path, [(name, Tensor), ...], metadata_json=None)\n\n"
     "Writes a safetensors file atomically (temporary file, fsync, rename), tensors of any maas dtype\n"
     "(F32, I32, I64, I8, U8, BOOL) in the given order, metadata_json (a JSON object of str -> str)\n"
     "as __metadata__."},
    {"load_safetensors", (PyCFunction)(void (*)(void))load_safetensors, METH_VARARGS | METH_KEYWORDS,
     "load_safetensors(path, mmap=True) -> (dict name -> Tensor, metadata_json)\n\n"
     "Validates the whole header first; ModelFormatError says what is wrong (a dtype maas lacks,\n"
     "such as F16, BF16 or F64, is named). With mmap=True the\n"
     "tensors wrap a private copy-on-write mapping of the file (no copy); the dict is in data order."},
    {"check_safetensors_metadata", check_safetensors_metadata, METH_O,
     "check_safetensors_metadata(json) -> None; ModelFormatError unless a JSON object of str -> str."},
    {NULL}};
