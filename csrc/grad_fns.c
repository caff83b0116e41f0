/* grad_fns.c -- the backward function of each recorded op: it reads the
 * node's attributes (layouts in maas.h) and calls the op's backward kernel,
 * accumulating into the input gradients that are not NULL. */
#include "maas.h"

#define GDATA(k) (gin[k] ? gin[k]->data : NULL)

maas_status maas_grad_unary(const maas_node *nd, const maas_tensor *gout,
                            maas_tensor *const *gin)
{
    return maas_unary_backward((maas_unary_op)nd->i[0], gin[0]->data, gout->data,
                               nd->in[0]->data, nd->out->data, gout->size,
                               (float)nd->f[0]);
}

maas_status maas_grad_softmax(const maas_node *nd, const maas_tensor *gout,
                              maas_tensor *const *gin)
{
    return maas_softmax_backward(gin[0]->data, gout->data, nd->out->data, nd->i[0],
                                 nd->i[1], nd->i[2], (int)nd->i[3]);
}

maas_status maas_grad_binary(const maas_node *nd, const maas_tensor *gout,
                             maas_tensor *const *gin)
{
    return maas_binary_backward((maas_binary_op)nd->i[0], gin[0], gin[1], gout,
                                nd->in[0], nd->in[1], nd->out);
}

maas_status maas_grad_reduce(const maas_node *nd, const maas_tensor *gout,
                             maas_tensor *const *gin)
{
    return maas_reduce_backward((maas_reduce_op)nd->i[0], gin[0]->data, gout->data,
                                nd->in[0]->data, nd->out->data, nd->i[1], nd->i[2],
                                nd->i[3]);
}

maas_status maas_grad_matmul(const maas_node *nd, const maas_tensor *gout,
                             maas_tensor *const *gin)
{
    return maas_matmul_backward(GDATA(0), GDATA(1), gout->data, nd->in[0]->data,
                                nd->in[1]->data, nd->i[0], nd->i[1], nd->i[2],
                                nd->i[3], (int)nd->i[4], (int)nd->i[5]);
}

maas_status maas_grad_dense(const maas_node *nd, const maas_tensor *gout,
                            maas_tensor *const *gin)
{
    return maas_dense_backward(GDATA(0), GDATA(1), nd->ninputs > 2 ? GDATA(2) : NULL,
                               gout->data, nd->in[0]->data, nd->in[1]->data,
                               nd->i[0], nd->i[1], nd->i[2]);
}

maas_status maas_grad_view(const maas_node *nd, const maas_tensor *gout,
                           maas_tensor *const *gin)
{
    return maas_accumulate(gin[0]->data + nd->i[0], gout->data, gout->size);
}

maas_status maas_grad_rows(const maas_node *nd, const maas_tensor *gout,
                           maas_tensor *const *gin)
{
    return maas_scatter_add_rows(gin[0]->data, gout->data, nd->i[0], nd->i[1],
                                 nd->i[2], nd->i[3]);
}

maas_status maas_grad_take(const maas_node *nd, const maas_tensor *gout,
                           maas_tensor *const *gin)
{
    const maas_tensor *idx = nd->saved;
    int64_t row = nd->i[0];
    for (int64_t r = 0; r < idx->size; r++) {
        maas_status s = maas_scatter_add_rows(gin[0]->data, gout->data + r * row,
                                              (int64_t)idx->data[r], 1, 1, row);
        if (s != MAAS_OK)
            return s;
    }
    return MAAS_OK;
}

maas_status maas_grad_transpose(const maas_node *nd, const maas_tensor *gout,
                                maas_tensor *const *gin)
{
    /* gout is (batch, cols, rows): transpose it back, then accumulate */
    maas_tensor *tmp = maas_tensor_new_like(gin[0]);
    if (!tmp)
        return MAAS_ERR_NOMEM;
    maas_status s = maas_transpose2d(tmp->data, gout->data, nd->i[0], nd->i[2], nd->i[1]);
    if (s == MAAS_OK)
        s = maas_accumulate(gin[0]->data, tmp->data, tmp->size);
    maas_tensor_decref(tmp);
    return s;
}

maas_status maas_grad_concat(const maas_node *nd, const maas_tensor *gout,
                             maas_tensor *const *gin)
{
    float *gxs[MAAS_NODE_MAX_IN];
    for (int j = 0; j < nd->ninputs; j++)
        gxs[j] = GDATA(j);
    return maas_concat_backward(gxs, gout->data, nd->i + 2, nd->ninputs, nd->i[0],
                                nd->i[1]);
}

maas_status maas_grad_loss(const maas_node *nd, const maas_tensor *gout,
                           maas_tensor *const *gin)
{
    return maas_loss_backward((maas_loss_op)nd->i[0], gin[0]->data, gout->data,
                              nd->saved->data, nd->in[0]->data, nd->i[1], nd->i[2],
                              (int)nd->i[3]);
}

maas_status maas_grad_dropout(const maas_node *nd, const maas_tensor *gout,
                              maas_tensor *const *gin)
{
    return maas_dropout_backward(gin[0]->data, gout->data, nd->saved->data, gout->size);
}
