"""Recurrent layers: SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed.

Each recurrent layer runs the whole sequence as one C op (``rnn``, in
csrc/ops/rnn.c): the input projection of every step is one GEMM, each step
one GEMM and a fused pass over the gates, and the backward runs through time
in one call. Keras 3's arguments, defaults, weight layouts and gate orders
(LSTM i, f, c, o; GRU z, r, h with ``reset_after=True``), masks (a masked
step carries the states and repeats the last output), ``go_backwards``,
``return_sequences``, ``return_state``, ``initial_state``, ``dropout`` and
``recurrent_dropout`` (one mask per sequence, from the seeded counter-based
generator, as Keras's ``DropoutRNNCell`` draws them), and ``stateful=True``
(Keras 3's: a fixed batch size, the final states of each batch the initial
states of the next, in ``layer.states``, zeroed by ``reset_state()``; not
weights, so neither trained nor saved; fit, evaluate and predict all carry
them, and fit shuffles the samples unless told ``shuffle=False``, which
sample i of one batch continuing sample i of the last needs, as in Keras).
Under ``model.quantize("int8")`` the input projection of every step is one
int8 GEMM (maas.quantization.recurrent).

>>> import numpy as np, maas
>>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
>>> maas.layers.LSTM(4)(x).shape
(2, 4)
>>> seq, h, c = maas.layers.LSTM(4, return_sequences=True, return_state=True)(x)
>>> seq.shape, h.shape, c.shape
((2, 5, 4), (2, 4), (2, 4))
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .. import _core
from .. import activations as _activations
from .. import initializers as _initializers
from .. import ops
from .. import random as _random
from .. import regularizers as _regularizers
from ..tensor import Tensor, Variable
from .base import Layer

_CELL_SIMPLE, _CELL_LSTM, _CELL_GRU = 0, 1, 2
_ACT_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "relu": 3, "hard_sigmoid": 4}


Orthogonal = _initializers.Orthogonal   # where Keras users import it from too

_probe = threading.local()


@contextlib.contextmanager
def stateless_probe():
    """Stateful layers neither read nor carry their states inside this block
    (fit's and evaluate's look at the first rows, which is not a batch)."""
    prev = getattr(_probe, "on", False)
    _probe.on = True
    try:
        yield
    finally:
        _probe.on = prev


def _probing() -> bool:
    return getattr(_probe, "on", False)


def _get_act(identifier):
    """An activation function, or the name "hard_sigmoid" (the kernels have
    it; maas.activations does not)."""
    if identifier == "hard_sigmoid":
        return identifier
    return _activations.get(identifier)


def _act_name(fn):
    return fn if isinstance(fn, str) else _activations.serialize(fn)


def _act_code(fn, what):
    name = _act_name(fn)
    if name not in _ACT_CODES:
        raise NotImplementedError(f"{what}={name!r} is not supported by maas's recurrent kernels; "
                                  f"use one of {sorted(_ACT_CODES)}")
    return _ACT_CODES[name]


def _unit_interval(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a float in [0, 1), received {name}={value!r}")
    return float(value)


def _fmt(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


class _RNN(Layer):
    """The shared machinery of SimpleRNN, LSTM and GRU."""

    _cell = _CELL_SIMPLE
    _gates = 1
    _nstates = 1
    supports_masking = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False,
                 **kwargs):
        quantization_config = kwargs.pop("quantization_config", None)  # maas.quantization
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.quantization_config = quantization_config
        if isinstance(units, (bool, np.bool_)) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Received an invalid value for argument `units`, expected a positive "
                             f"integer, got {units!r}.")
        self.units = int(units)
        self.activation = _get_act(activation)
        self.recurrent_activation = _get_act(recurrent_activation)
        self._act = _act_code(self.activation, "activation")
        self._ract = _act_code(self.recurrent_activation, "recurrent_activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.recurrent_initializer = _initializers.get(recurrent_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        if any(c is not None for c in (kernel_constraint, recurrent_constraint, bias_constraint)):
            raise NotImplementedError(f"{type(self).__name__}: weight constraints are not "
                                      "supported by maas")
        self.dropout = _unit_interval("dropout", dropout)
        self.recurrent_dropout = _unit_interval("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self._calls = 0
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.states = None   # stateful: one non-trainable Variable per state, (batch, units)
        self.unroll = bool(unroll)   # a speed hint in Keras; maas's kernel loops in C either way
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.kernel = self.recurrent_kernel = self.bias = None

    # -- weights
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initial(self, shape):
        return self.bias_initializer

    def build(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        if len(shape) != 3:
            raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                             f"expected ndim=3, found ndim={len(shape)}. Full shape received: "
                             f"{_fmt(shape)}")
        if shape[-1] is None:
            raise ValueError(f"{type(self).__name__} layer {self.name!r}: the last dimension of "
                             f"the inputs must be known, received input_shape={_fmt(shape)}")
        gu = self._gates * self.units
        if self.quantization_config is not None:   # a quantized model being loaded
            from ..quantization import recurrent as _qr
            _qr.build_recurrent(self, shape[-1])
            self._build_states(shape)
            self.built = True
            return
        self.kernel = self.add_weight(shape=(shape[-1], gu), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, gu),
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                name="recurrent_kernel")
        if self.use_bias:
            bs = self._bias_shape()
            self.bias = self.add_weight(shape=bs, initializer=self._bias_initial(bs),
                                        regularizer=self.bias_regularizer, name="bias")
        self._build_states(shape)
        self.built = True

    def _build_states(self, shape):
        if self.stateful:
            if self.states is not None:
                self.reset_state()
            else:
                if shape[0] is None:
                    raise ValueError("When using `stateful=True` in a RNN, the batch size must be "
                                     f"static. Found dynamic batch size: sequence.shape={_fmt(shape)} "
                                     "(give the model a fixed batch size: maas.Input(shape, "
                                     "batch_size=...))")
                # not weights (Keras does not track them): neither saved nor trained
                self.states = [Variable(np.zeros((int(shape[0]), self.units), np.float32),
                                        trainable=False, name="rnn_state")
                               for _ in range(self._nstates)]

    # -- stateful
    def reset_state(self):
        """Zeroes the states of a stateful layer (Keras 3's ``reset_state``;
        nothing to do for a layer that is not stateful)."""
        if self.states is not None:
            for v in self.states:
                v.assign(np.zeros(v.shape, np.float32))

    def reset_states(self):
        """Keras's compatibility alias of :meth:`reset_state`."""
        self.reset_state()

    def _carry_in(self, batch):
        if tuple(self.states[0].shape)[0] != batch:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) is stateful with batch size "
                f"{self.states[0].shape[0]} and received a batch of {batch}: every batch must "
                "have that size (pass batch_size= to fit/predict so that it divides the "
                "number of samples, or build a non-stateful copy for other sizes)")
        from .. import engine
        if engine.tracing():
            # the variables themselves: a plan reads their memory on every replay, and
            # their new values are written after the step (engine.defer_assign)
            return list(self.states)
        # eager: copies, since the backward (tape.gradient, after this call has
        # carried the states on) reads the initial states
        return [Tensor(np.array(v)) for v in self.states]

    def _carry_out(self, outs):
        from .. import engine
        for var, value in zip(self.states, list(outs)[1:]):
            if engine.tracing():
                engine.defer_assign(var, value)
            else:
                var.assign(value)
    # -- calling
    def __call__(self, inputs, *args, initial_state=None, **kwargs):
        if initial_state is not None:   # Keras's two spellings: a list, or initial_state=
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            inputs = [inputs] + states
        return super().__call__(inputs, *args, **kwargs)

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            x, states = inputs[0], list(inputs[1:])
            if states and len(states) != self._nstates:
                raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) expects "
                                 f"{self._nstates} initial state(s), received {len(states)}")
            return x, states
        return inputs, []

    def _next_key(self):
        self._calls += 1
        return int(self.seed), self._calls

    def _drop_mask(self, shape, rate):
        ones = Tensor(np.ones(shape, np.float32))
        if self.seed is None:
            return _random.dropout(ones, rate)
        seed, stream = _random.draw_key(self._next_key)
        return _core.dropout(ones, rate, seed, stream)

    def _in_dim(self):
        return self._q_in_dim if self.quantization_config is not None else self.kernel.shape[0]

    def _check_input(self, inputs):
        x, _ = self._split(inputs)
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[-1] != self._in_dim():
            raise ValueError(f"Input 0 of layer \"{self.name}\" is incompatible with the layer: "
                             f"expected shape=(None, None, {self._in_dim()}), found "
                             f"shape={_fmt(shape)}")

    def _run(self, x, states, mask, training, zero_output=None, unreverse=False):
        """The op's outputs: (output, h[, c])."""
        b, _, f = x.shape
        carry = self.stateful and not _probing()
        if carry and not states:
            states = self._carry_in(b)
        if training and self.dropout > 0:
            x = x * self._drop_mask((b, 1, f), self.dropout)
        projected = self.quantization_config is not None
        if projected:   # int8: every step's input projection as one int8 GEMM
            from ..quantization import recurrent as _qr
            ins = [_qr.projection(self, x), self.recurrent_kernel]
        else:
            ins = [x, self.kernel, self.recurrent_kernel]
        if self.use_bias:
            ins.append(self.bias)
        if mask is not None:
            if isinstance(mask, (list, tuple)):
                mask = mask[0]
            ins.append(mask)
        h0 = c0 = None
        if states:
            h0 = states[0]
            if self._cell == _CELL_LSTM:
                c0 = states[1]
            ins.append(h0)
            if c0 is not None:
                ins.append(c0)
        rdrop = None
        if training and self.recurrent_dropout > 0:
            rdrop = self._drop_mask((b, self.units), self.recurrent_dropout)
            ins.append(rdrop)
        zero = self.zero_output_for_mask if zero_output is None else zero_output
        outs = _core.op(_core.OP_RNN, ins, self._cell, self._act, self._ract,
                        int(self.return_sequences), int(self.go_backwards), int(bool(zero)),
                        int(self.use_bias), int(mask is not None), int(h0 is not None),
                        int(c0 is not None), int(rdrop is not None), int(bool(unreverse)),
                        int(self._cell == _CELL_GRU and not self.reset_after), int(projected))
        if carry:
            self._carry_out(outs)
        return outs

    def call(self, sequences, mask=None, training=False):
        x, states = self._split(sequences)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        outs = self._run(x, states, mask, training)
        if self.return_state:
            return list(outs)
        return outs[0]

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out_mask = mask if self.return_sequences else None
        if self.return_state:
            return [out_mask] + [None] * self._nstates
        return out_mask

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        b, t = shape[0], shape[1]
        out = (b, t, self.units) if self.return_sequences else (b, self.units)
        if self.return_state:
            return [out] + [(b, self.units)] * self._nstates
        return out

    def get_config(self):
        cfg = {**super().get_config(), "units": self.units,
               "activation": _act_name(self.activation),
               "use_bias": self.use_bias,
               "kernel_initializer": _initializers.serialize(self.kernel_initializer),
               "recurrent_initializer": _initializers.serialize(self.recurrent_initializer),
               "bias_initializer": _initializers.serialize(self.bias_initializer),
               "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
               "recurrent_regularizer": _regularizers.serialize(self.recurrent_regularizer),
               "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
               "activity_regularizer": _regularizers.serialize(self.activity_regularizer),
               "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout,
               "seed": self.seed, "return_sequences": self.return_sequences,
               "return_state": self.return_state, "go_backwards": self.go_backwards,
               "stateful": self.stateful, "unroll": self.unroll,
               "zero_output_for_mask": self.zero_output_for_mask}
        if self.quantization_config is not None:
            cfg["quantization_config"] = dict(self.quantization_config)
        if self._cell != _CELL_SIMPLE:
            cfg["recurrent_activation"] = _act_name(self.recurrent_activation)
        return cfg


class SimpleRNN(_RNN):
    """A fully connected RNN: ``h_t = activation(x_t @ kernel + h_{t-1} @
    recurrent_kernel + bias)``.

    >>> maas.layers.SimpleRNN(3)(np.ones((2, 4, 5), np.float32)).shape
    (2, 3)
    """

    _cell, _gates, _nstates = _CELL_SIMPLE, 1, 1

    def __init__(self, units, activation="tanh", **kwargs):
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)


class LSTM(_RNN):
    """Long short-term memory (Hochreiter 1997), Keras's layout: kernel
    (features, 4 units) and recurrent_kernel (units, 4 units) in gate order
    i, f, c, o; ``unit_forget_bias=True`` starts the forget bias at 1.

    >>> maas.layers.LSTM(3)(np.ones((2, 4, 5), np.float32)).shape
    (2, 3)
    """

    _cell, _gates, _nstates = _CELL_LSTM, 4, 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias=True, implementation=2, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.implementation = implementation

    def _bias_initial(self, shape):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = self.bias_initializer, self.units

        def init(shape, dtype=None):
            i = np.asarray(base((u,)))
            co = np.asarray(base((2 * u,)))
            return Tensor(np.concatenate([i, np.ones(u, np.float32), co]).astype(np.float32))
        return init

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias,
                "implementation": self.implementation}


class GRU(_RNN):
    """Gated recurrent unit (Cho 2014), gate order z, r, h. Keras's default
    variant ``reset_after=True`` applies the reset gate after the recurrent
    product, ``hh = act(x W_h + b_h + r * (h R_h + b'_h))``, with a bias of
    shape (2, 3 units) (input and recurrent biases; cuDNN's variant).
    ``reset_after=False`` is Keras's v1 GRU, ``hh = act(x W_h + b_h + (r * h)
    R_h)``, with one bias of shape (3 units,).

    >>> maas.layers.GRU(3)(np.ones((2, 4, 5), np.float32)).shape
    (2, 3)
    >>> maas.layers.GRU(3, reset_after=False)(np.ones((2, 4, 5), np.float32)).shape
    (2, 3)
    """

    _cell, _gates, _nstates = _CELL_GRU, 3, 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                 implementation=2, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, **kwargs)
        self.reset_after = bool(reset_after)
        self.implementation = implementation

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after,
                "implementation": self.implementation}


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy backwards over the
    sequence and merges the outputs (``merge_mode="concat"`` by default;
    "sum", "mul", "ave", or None for a list). With return_sequences the
    backward outputs are put back in the input's time order, and masked steps
    output zeros (Keras's rule).

    >>> layer = maas.layers.Bidirectional(maas.layers.GRU(3, return_sequences=True))
    >>> layer(np.ones((2, 4, 5), np.float32)).shape
    (2, 4, 6)
    """

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, _RNN):
            raise ValueError(f"Bidirectional: please initialize it with a maas recurrent layer "
                             f"(SimpleRNN, LSTM, GRU); received layer={layer!r}")
        if merge_mode not in ("sum", "mul", "ave", "concat", None):
            raise ValueError(f"Invalid merge mode. Received: {merge_mode}. Merge mode should be "
                             "one of {'sum', 'mul', 'ave', 'concat', None}")
        super().__init__(**kwargs)
        from . import deserialize, serialize
        fcfg = serialize(layer)
        fcfg["config"] = dict(fcfg["config"], name="forward_" + layer.name.removeprefix("forward_"))
        self.forward_layer = deserialize(fcfg)
        if backward_layer is None:
            bcfg = serialize(layer)
            bcfg["config"] = dict(bcfg["config"],
                                  name="backward_" + layer.name.removeprefix("backward_"),
                                  go_backwards=not layer.go_backwards)
            self.backward_layer = deserialize(bcfg)
        else:
            if not isinstance(backward_layer, _RNN):
                raise ValueError(f"Bidirectional: backward_layer must be a maas recurrent layer, "
                                 f"received {backward_layer!r}")
            self.backward_layer = backward_layer
        for attr in ("stateful", "return_sequences", "return_state"):
            if getattr(self.forward_layer, attr) != getattr(self.backward_layer, attr):
                raise ValueError(f"Forward layer and backward layer should have the same "
                                 f"{attr}; received {getattr(self.forward_layer, attr)} and "
                                 f"{getattr(self.backward_layer, attr)}")
        self.merge_mode = merge_mode
        self.stateful = self.forward_layer.stateful
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state
        self._initial_weights = weights

    def build(self, input_shape):
        self.forward_layer._maybe_build(input_shape)
        self.backward_layer._maybe_build(input_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None
        self.built = True

    def __call__(self, inputs, *args, initial_state=None, **kwargs):
        if initial_state is not None:
            inputs = [inputs] + list(initial_state)
        return super().__call__(inputs, *args, **kwargs)

    def _check_input(self, inputs):
        self.forward_layer._check_input(inputs[0] if isinstance(inputs, (list, tuple)) else inputs)

    def reset_state(self):
        """Zeroes both directions' states (a stateful Bidirectional only)."""
        if not self.stateful:
            raise AttributeError("Layer must be stateful.")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self):
        self.reset_state()

    def call(self, sequences, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if isinstance(sequences, (list, tuple)):
            x, states = sequences[0], list(sequences[1:])
            half = len(states) // 2
            fs, bs = states[:half], states[half:]
        else:
            x, fs, bs = sequences, [], []
        zero = self.return_sequences
        f = self.forward_layer._run(x, fs, mask, training, zero_output=zero)
        b = self.backward_layer._run(x, bs, mask, training, zero_output=zero,
                                     unreverse=self.return_sequences)
        y, y_rev = f[0], b[0]
        if self.merge_mode == "concat":
            out = ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = y + y_rev
        elif self.merge_mode == "ave":
            out = (y + y_rev) * 0.5
        elif self.merge_mode == "mul":
            out = y * y_rev
        else:
            out = [y, y_rev]
        if self.return_state:
            states = list(f[1:]) + list(b[1:])
            return (out if isinstance(out, list) else [out]) + states
        return out

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        n = 2 if self.merge_mode is None else 1
        if self.return_state:
            return [out] * n + [None] * (2 * self.forward_layer._nstates)
        return [out] * n if n == 2 else out

    def compute_output_shape(self, input_shape):
        fs = self.forward_layer.compute_output_shape(input_shape)
        out = fs[0] if self.return_state else fs
        if self.merge_mode == "concat":
            out = tuple(out[:-1]) + (2 * out[-1],)
        outs = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            return outs + list(fs[1:]) * 2
        return outs if self.merge_mode is None else out

    def get_config(self):
        from . import serialize
        cfg = {**super().get_config(), "merge_mode": self.merge_mode,
               "layer": serialize(self.forward_layer)}
        cfg["backward_layer"] = serialize(self.backward_layer)
        return cfg

    @classmethod
    def from_config(cls, config):
        from . import deserialize
        config = dict(config)
        layer = deserialize(config.pop("layer"))
        bl = config.pop("backward_layer", None)
        backward = deserialize(bl) if bl is not None else None
        bis = config.pop("batch_input_shape", None)
        if bis is not None:
            config["input_shape"] = tuple(bis[1:])
        obj = cls(layer, backward_layer=backward, **config)
        return obj


class TimeDistributed(Layer):
    """Applies a layer to every step of a (batch, steps, ...) input (the
    steps folded into the batch, one call of the inner layer).

    >>> layer = maas.layers.TimeDistributed(maas.layers.Dense(2))
    >>> layer(np.ones((3, 4, 5), np.float32)).shape
    (3, 4, 2)
    """

    supports_masking = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"Please initialize `TimeDistributed` layer with a `maas.layers.Layer` "
                             f"instance. Received: {layer!r}")
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"`TimeDistributed` Layer should be passed an `input_shape` with at "
                             f"least 3 dimensions, received: {_fmt(input_shape)}")
        self.layer._maybe_build((None,) + tuple(input_shape[2:]))
        self.built = True

    def call(self, inputs, training=False):
        shape = tuple(inputs.shape)
        flat = ops.reshape(inputs, (shape[0] * shape[1],) + shape[2:])
        y = self.layer(flat, training=training)
        return ops.reshape(y, shape[:2] + tuple(y.shape[1:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def get_config(self):
        from . import serialize
        return {**super().get_config(), "layer": serialize(self.layer)}

    @classmethod
    def from_config(cls, config):
        from . import deserialize
        config = dict(config)
        layer = deserialize(config.pop("layer"))
        bis = config.pop("batch_input_shape", None)
        if bis is not None:
            config["input_shape"] = tuple(bis[1:])
        return cls(layer, **config)


__all__ = ["SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed", "Orthogonal"]

# model.quantize("int8") covers the recurrent layers' input projections
from ..quantization import recurrent as _quantization_recurrent  # noqa: E402,F401
