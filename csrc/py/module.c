/* module.c -- maas._core: multi-phase init, module state, op constants. */
#define MAAS_IMPORT_ARRAY
#include "common.h"

static const struct {
    const char *name;
    int value;
} constants[] = {
    {"U_RELU", MAAS_U_RELU}, {"U_LEAKY_RELU", MAAS_U_LEAKY_RELU}, {"U_ELU", MAAS_U_ELU},
    {"U_GELU", MAAS_U_GELU}, {"U_GELU_TANH", MAAS_U_GELU_TANH}, {"U_SIGMOID", MAAS_U_SIGMOID},
    {"U_TANH", MAAS_U_TANH}, {"U_SOFTPLUS", MAAS_U_SOFTPLUS}, {"U_SILU", MAAS_U_SILU},
    {"U_EXP", MAAS_U_EXP}, {"U_LOG", MAAS_U_LOG}, {"U_SQRT", MAAS_U_SQRT},
    {"U_NEG", MAAS_U_NEG}, {"U_ABS", MAAS_U_ABS}, {"U_SQUARE", MAAS_U_SQUARE},
    {"U_POW_SCALAR", MAAS_U_POW_SCALAR}, {"U_RELU6", MAAS_U_RELU6},
    {"B_ADD", MAAS_B_ADD}, {"B_SUB", MAAS_B_SUB}, {"B_MUL", MAAS_B_MUL}, {"B_DIV", MAAS_B_DIV},
    {"B_POW", MAAS_B_POW}, {"B_MAXIMUM", MAAS_B_MAXIMUM}, {"B_MINIMUM", MAAS_B_MINIMUM},
    {"B_LT", MAAS_B_LT}, {"B_LE", MAAS_B_LE}, {"B_GT", MAAS_B_GT}, {"B_GE", MAAS_B_GE},
    {"B_EQ", MAAS_B_EQ}, {"B_NE", MAAS_B_NE},
    {"R_SUM", MAAS_R_SUM}, {"R_MEAN", MAAS_R_MEAN}, {"R_MAX", MAAS_R_MAX}, {"R_MIN", MAAS_R_MIN},
    {"L_MSE", MAAS_L_MSE}, {"L_MAE", MAAS_L_MAE}, {"L_BCE", MAAS_L_BCE}, {"L_CCE", MAAS_L_CCE},
    {"L_SCCE", MAAS_L_SCCE}, {"L_HINGE", MAAS_L_HINGE},
    {"OPT_SGD", MAAS_OPT_SGD}, {"OPT_ADAM", MAAS_OPT_ADAM}, {"OPT_RMSPROP", MAAS_OPT_RMSPROP},
    {"OP_UNARY", MAAS_OP_UNARY}, {"OP_BINARY", MAAS_OP_BINARY}, {"OP_SOFTMAX", MAAS_OP_SOFTMAX},
    {"OP_REDUCE", MAAS_OP_REDUCE}, {"OP_MATMUL", MAAS_OP_MATMUL}, {"OP_DENSE", MAAS_OP_DENSE},
    {"OP_VIEW", MAAS_OP_VIEW}, {"OP_ROWS", MAAS_OP_ROWS}, {"OP_TAKE", MAAS_OP_TAKE},
    {"OP_TRANSPOSE", MAAS_OP_TRANSPOSE}, {"OP_CONCAT", MAAS_OP_CONCAT}, {"OP_LOSS", MAAS_OP_LOSS},
    {"OP_DROPOUT", MAAS_OP_DROPOUT}, {"OP_RANDOM", MAAS_OP_RANDOM}, {"OP_CAST", MAAS_OP_CAST},
    {"OP_LAYERNORM", MAAS_OP_LAYERNORM},
    {"OP_BATCHNORM", MAAS_OP_BATCHNORM},
    {"OP_GROUPNORM", MAAS_OP_GROUPNORM},
    {"OP_POOL2D", MAAS_OP_POOL2D},
    {"OP_CONV2D", MAAS_OP_CONV2D}, {"OP_CONV2D_TRANSPOSE", MAAS_OP_CONV2D_TRANSPOSE},
    {"OP_PAD2D", MAAS_OP_PAD2D},
    {"OP_RESIZE2D", MAAS_OP_RESIZE2D},
    {"OP_PERMUTE", MAAS_OP_PERMUTE},
    {"OP_TRANSFORM2D", MAAS_OP_TRANSFORM2D},
    {"OP_EMBEDDING", MAAS_OP_EMBEDDING},
    {"OP_RNN", MAAS_OP_RNN},
    {"OP_ATTENTION", MAAS_OP_ATTENTION}, {"OP_ATTENTION_DROPOUT", MAAS_OP_ATTENTION_DROPOUT},
    {"OP_QPACK", MAAS_OP_QPACK}, {"OP_QDENSE", MAAS_OP_QDENSE}, {"OP_SPDENSE", MAAS_OP_SPDENSE},
    {"OP_QCONV2D", MAAS_OP_QCONV2D}, {"OP_QEMBEDDING", MAAS_OP_QEMBEDDING},
    {"OP_COUNT", MAAS_OP_COUNT},
    {"MAX_DIMS", MAAS_MAX_DIMS}, {"PAR_THRESHOLD", MAAS_PAR_THRESHOLD},
};

extern PyMethodDef bind_optim2_methods[]; /* bind_optim2.c */

static int core_exec(PyObject *m)
{
    if (_import_array() < 0)
        return -1;
    module_state *st = state_of_module(m);
    if (tensor_type_init(m, st) < 0 || tape_type_init(m, st) < 0 || plan_type_init(m, st) < 0)
        return -1;
    if (PyModule_AddFunctions(m, bind_ops_methods) < 0 ||
        PyModule_AddFunctions(m, bind_optim2_methods) < 0 ||
        PyModule_AddFunctions(m, bind_format_methods) < 0 ||
        PyModule_AddFunctions(m, bind_cast_methods) < 0 ||
        PyModule_AddFunctions(m, bind_trace_methods) < 0)
        return -1;
    { extern PyMethodDef bind_config_methods[]; if (PyModule_AddFunctions(m, bind_config_methods) < 0) return -1; }
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0)
            return -1;
    return 0;
}

static int core_traverse(PyObject *m, visitproc visit, void *arg)
{
    module_state *st = state_of_module(m);
    Py_VISIT(st->tensor_type);
    Py_VISIT(st->tape_type);
    return 0;
}

static int core_clear(PyObject *m)
{
    module_state *st = state_of_module(m);
    Py_CLEAR(st->tensor_type);
    Py_CLEAR(st->tape_type);
    return 0;
}

static void core_free(void *m) { core_clear((PyObject *)m); }

static PyModuleDef_Slot core_slots[] = {{Py_mod_exec, core_exec}, {0, NULL}};

PyModuleDef maas_core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "maas._core",
    .m_doc = "The C core of maas: tensors, kernels, the autodiff tape.",
    .m_size = sizeof(module_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&maas_core_module); }
