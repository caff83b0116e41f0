/* autodiff.c -- the tape: reverse-mode automatic differentiation.
 *
 * A tape is a list of recorded nodes plus the set of tensors it tracks
 * (watched tensors and node outputs; tensors with requires_grad are tracked
 * by every tape). maas_tape_gradient walks the nodes backwards, keeping one
 * gradient buffer per tensor in a pointer-keyed hash map, seeds the target
 * with ones (the gradient of sum(target)), and lets each node's backward
 * function accumulate into its inputs' buffers. A node output's gradient is
 * freed as soon as its node has run, unless it was asked for. */
#include "maas.h"

#include <stdlib.h>
#include <string.h>

/* ---- a pointer-keyed open-addressing map (linear probing, no deletion) */

typedef struct {
    maas_tensor *key;
    maas_tensor *val;
} slot;

typedef struct {
    slot *s;
    int64_t cap, count; /* cap is a power of two */
} ptrmap;

static uint64_t hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static slot *map_find(const ptrmap *m, const maas_tensor *key)
{
    if (!m->cap)
        return NULL;
    for (uint64_t i = hash_ptr(key) & (uint64_t)(m->cap - 1);; i = (i + 1) & (uint64_t)(m->cap - 1)) {
        if (m->s[i].key == key)
            return &m->s[i];
        if (!m->s[i].key)
            return NULL;
    }
}

static maas_status map_grow(ptrmap *m)
{
    int64_t ncap = m->cap ? m->cap * 2 : 64;
    slot *ns = calloc((size_t)ncap, sizeof *ns);
    if (!ns)
        return maas_error(MAAS_ERR_NOMEM, "out of memory growing the tape");
    for (int64_t j = 0; j < m->cap; j++) {
        if (!m->s[j].key)
            continue;
        uint64_t i = hash_ptr(m->s[j].key) & (uint64_t)(ncap - 1);
        while (ns[i].key)
            i = (i + 1) & (uint64_t)(ncap - 1);
        ns[i] = m->s[j];
    }
    free(m->s);
    m->s = ns;
    m->cap = ncap;
    return MAAS_OK;
}

/* Inserts key (if absent) and returns its slot, or NULL on out of memory. */
static slot *map_insert(ptrmap *m, maas_tensor *key)
{
    slot *sl = map_find(m, key);
    if (sl)
        return sl;
    if ((m->count + 1) * 2 > m->cap && map_grow(m) != MAAS_OK)
        return NULL;
    uint64_t i = hash_ptr(key) & (uint64_t)(m->cap - 1);
    while (m->s[i].key)
        i = (i + 1) & (uint64_t)(m->cap - 1);
    m->s[i].key = key;
    m->s[i].val = NULL;
    m->count++;
    return &m->s[i];
}

/* ---- the tape */

struct maas_tape {
    maas_node *nodes;
    int64_t n, cap;
    ptrmap tracked; /* key: tracked tensor (a reference is held); val unused */
};

maas_tape *maas_tape_new(void)
{
    maas_tape *t = calloc(1, sizeof *t);
    if (!t)
        maas_error(MAAS_ERR_NOMEM, "out of memory creating a tape");
    return t;
}

static void node_release(maas_node *nd)
{
    for (int i = 0; i < nd->nin; i++)
        maas_tensor_decref(nd->in[i]);
    for (int k = 0; k < nd->nout; k++)
        maas_tensor_decref(nd->out[k]);
    for (int k = 0; k < nd->nsaved; k++)
        maas_tensor_decref(nd->saved[k]);
}

void maas_tape_free(maas_tape *tape)
{
    if (!tape)
        return;
    for (int64_t i = 0; i < tape->n; i++)
        node_release(&tape->nodes[i]);
    free(tape->nodes);
    for (int64_t i = 0; i < tape->tracked.cap; i++)
        maas_tensor_decref(tape->tracked.s[i].key);
    free(tape->tracked.s);
    free(tape);
}

int64_t maas_tape_size(const maas_tape *tape) { return tape->n; }

int maas_tape_tracks(const maas_tape *tape, const maas_tensor *t)
{
    return t && (t->requires_grad || map_find(&tape->tracked, t) != NULL);
}

static maas_status track(maas_tape *tape, maas_tensor *t)
{
    if (map_find(&tape->tracked, t))
        return MAAS_OK;
    if (!map_insert(&tape->tracked, t))
        return MAAS_ERR_NOMEM;
    maas_tensor_incref(t);
    return MAAS_OK;
}

maas_status maas_tape_watch(maas_tape *tape, maas_tensor *t) { return track(tape, t); }

maas_status maas_tape_record(maas_tape *tape, const maas_node *node)
{
    const maas_op_def *def = maas_op_get(node->op);
    if (!def || node->nin < 0 || node->nin > MAAS_OP_MAX_IN || node->nout < 1 ||
        node->nout > MAAS_OP_MAX_OUT || node->nsaved < 0 || node->nsaved > MAAS_OP_MAX_SAVED)
        return maas_error(MAAS_ERR_STATE, "malformed tape node for %s", def ? def->name : "?");
    for (int k = 0; k < node->nout; k++)
        if (!node->out[k])
            return maas_error(MAAS_ERR_STATE, "malformed tape node for %s", def->name);
    if (tape->n == tape->cap) {
        int64_t ncap = tape->cap ? tape->cap * 2 : 64;
        maas_node *nn = realloc(tape->nodes, (size_t)ncap * sizeof *nn);
        if (!nn)
            return maas_error(MAAS_ERR_NOMEM, "out of memory recording %s", def->name);
        tape->nodes = nn;
        tape->cap = ncap;
    }
    for (int k = 0; k < node->nout; k++) {
        maas_status s = track(tape, node->out[k]);
        if (s != MAAS_OK)
            return s;
    }
    maas_node *nd = &tape->nodes[tape->n++];
    *nd = *node;
    for (int i = 0; i < nd->nin; i++)
        maas_tensor_incref(nd->in[i]);
    for (int k = 0; k < nd->nout; k++)
        maas_tensor_incref(nd->out[k]);
    for (int k = 0; k < nd->nsaved; k++)
        maas_tensor_incref(nd->saved[k]);
    return MAAS_OK;
}

const maas_node *maas_tape_nodes(const maas_tape *tape, int64_t *n)
{
    *n = tape->n;
    return tape->nodes;
}

static void free_grads(ptrmap *g)
{
    for (int64_t i = 0; i < g->cap; i++)
        maas_tensor_decref(g->s[i].val);
    free(g->s);
}

static int is_source(maas_tensor *t, int n, maas_tensor *const *sources)
{
    for (int i = 0; i < n; i++)
        if (sources[i] == t)
            return 1;
    return 0;
}

maas_status maas_tape_gradient(maas_tape *tape, maas_tensor *target,
                               int nsources, maas_tensor *const *sources,
                               maas_tensor **grads)
{
    ptrmap g = {0};
    maas_status s = MAAS_OK;
    for (int i = 0; i < nsources; i++)
        grads[i] = NULL;

    slot *sl = map_insert(&g, target);
    if (!sl || !(sl->val = maas_tensor_new_like(target))) {
        free_grads(&g);
        return MAAS_ERR_NOMEM;
    }
    for (int64_t i = 0; i < target->size; i++)
        sl->val->data[i] = 1.0f;

    for (int64_t k = tape->n - 1; k >= 0; k--) {
        const maas_node *nd = &tape->nodes[k];
        int reached = 0;
        for (int j = 0; j < nd->nout && !reached; j++) {
            slot *os = map_find(&g, nd->out[j]);
            reached = os && os->val;
        }
        if (!reached)
            continue;
        const maas_op_def *def = maas_op_get(nd->op);
        maas_tensor *gin[MAAS_OP_MAX_IN] = {NULL};
        int any = 0;
        for (int i = 0; i < nd->nin && def->backward; i++) {
            if ((nd->nograd >> i & 1u) || !maas_tape_tracks(tape, nd->in[i]))
                continue;
            slot *is = map_insert(&g, nd->in[i]);
            if (!is) {
                s = MAAS_ERR_NOMEM;
                goto done;
            }
            if (!is->val && !(is->val = maas_tensor_zeros_like(nd->in[i]))) {
                s = MAAS_ERR_NOMEM;
                goto done;
            }
            gin[i] = is->val;
            any = 1;
        }
        /* looked up after the inserts, which may move slots */
        const maas_tensor *gout[MAAS_OP_MAX_OUT] = {NULL};
        for (int j = 0; j < nd->nout; j++) {
            slot *os = map_find(&g, nd->out[j]);
            gout[j] = os ? os->val : NULL;
        }
        if (any && (s = def->backward(nd, gout, gin)) != MAAS_OK)
            goto done;
        /* each tensor is the output of one node: its gradient is complete and
         * no longer needed, unless it was asked for */
        for (int j = 0; j < nd->nout; j++) {
            if (is_source(nd->out[j], nsources, sources))
                continue;
            slot *os = map_find(&g, nd->out[j]);
            if (os && os->val) {
                maas_tensor_decref(os->val);
                os->val = NULL;
            }
        }
    }
    for (int i = 0; i < nsources; i++) {
        slot *ss = map_find(&g, sources[i]);
        if (ss && ss->val) {
            grads[i] = ss->val;
            maas_tensor_incref(ss->val);
        }
    }
done:
    if (s != MAAS_OK)
        for (int i = 0; i < nsources; i++) {
            maas_tensor_decref(grads[i]);
            grads[i] = NULL;
        }
    free_grads(&g);
    return s;
}
