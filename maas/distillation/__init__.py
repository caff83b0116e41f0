"""Knowledge distillation, as in Keras's example "Knowledge Distillation"
(keras.io/examples/vision/knowledge_distillation): a :class:`Distiller`
trains a student on the hard labels and on the teacher's outputs softened
by a temperature; the student is then a plain model that saves and serves
like any other.

>>> import numpy as np, maas
>>> from maas.distillation import Distiller
>>> teacher = maas.Sequential([maas.Input((4,)), maas.layers.Dense(8, activation="relu"),
...                            maas.layers.Dense(3)])
>>> student = maas.Sequential([maas.Input((4,)), maas.layers.Dense(3)])
>>> d = Distiller(student=student, teacher=teacher, temperature=3.0, alpha=0.1)
>>> d.compile(optimizer="adam", metrics=["sparse_categorical_accuracy"],
...           student_loss_fn=maas.losses.SparseCategoricalCrossentropy(from_logits=True),
...           distillation_loss_fn=maas.losses.KLDivergence())
>>> x, y = np.ones((8, 4), np.float32), np.zeros(8, np.int64)
>>> _ = d.fit(x, y, epochs=1, verbose=0)
>>> student.predict(x, verbose=0).shape
(8, 3)
"""
from __future__ import annotations

from .. import losses as _losses
from .. import ops
from ..models.model import Model

__all__ = ["Distiller"]


def _is_kld(fn):
    if isinstance(fn, _losses.KLDivergence):
        return getattr(fn, "reduction", "sum_over_batch_size") in ("sum_over_batch_size", "auto")
    return fn is _losses.kl_divergence


class Distiller(Model):
    """``loss = alpha * student_loss_fn(y, student(x))
    + (1 - alpha) * distillation_loss_fn(softmax(teacher(x) / T), softmax(student(x) / T)) * T**2``
    (Keras's example; both models output logits). The teacher is frozen
    (``teacher.trainable = False``); only the student trains. ``call`` is
    the student's, so ``evaluate``/``predict`` measure the student. The
    step is traced into a compiled plan like any model's."""

    def __init__(self, student, teacher, temperature: float = 3.0, alpha: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        teacher.trainable = False
        self._set(temperature, alpha)
        self.student_loss_fn = None
        self.distillation_loss_fn = None

    def _set(self, temperature, alpha):
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"Distiller: temperature must be a positive number, received "
                             f"temperature={temperature!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"Distiller: alpha must be in [0, 1], received alpha={alpha!r}")
        self.temperature, self.alpha = float(temperature), float(alpha)

    def compile(self, optimizer="adam", metrics=None, student_loss_fn=None,
                distillation_loss_fn=None, alpha=None, temperature=None, **kwargs):
        """Keras's example's compile: the optimizer, the student's metrics,
        ``student_loss_fn(y_true, y_pred)`` on the hard labels and
        ``distillation_loss_fn(teacher_probs, student_probs)``; ``alpha``
        and ``temperature`` here replace the constructor's."""
        if student_loss_fn is None or distillation_loss_fn is None:
            raise ValueError("Distiller.compile needs student_loss_fn and distillation_loss_fn, "
                             "e.g. SparseCategoricalCrossentropy(from_logits=True) and "
                             "KLDivergence()")
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.student_loss_fn = _losses.get(student_loss_fn) if isinstance(student_loss_fn, str) \
            else student_loss_fn
        self.distillation_loss_fn = _losses.get(distillation_loss_fn) \
            if isinstance(distillation_loss_fn, str) else distillation_loss_fn
        self._set(self.temperature if temperature is None else temperature,
                  self.alpha if alpha is None else alpha)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_pred = self.teacher(x, training=False)
        student_loss = self.student_loss_fn(y, y_pred)
        t = self.temperature
        soft_teacher = ops.softmax(teacher_pred / t, axis=1)
        soft_student = ops.softmax(y_pred / t, axis=1)
        if _is_kld(self.distillation_loss_fn):
            # maas's losses read y_true into NumPy (labels); the teacher's
            # probabilities are a tensor of the step, so KL is written in ops
            # here (the same formula and mean over the batch) to stay traced
            yt = ops.clip(soft_teacher, _losses.EPSILON, 1.0)
            yp = ops.clip(soft_student, _losses.EPSILON, 1.0)
            distillation_loss = ops.mean(ops.sum(yt * (ops.log(yt) - ops.log(yp)), axis=-1))
        else:
            distillation_loss = self.distillation_loss_fn(soft_teacher, soft_student)
        distillation_loss = distillation_loss * (t ** 2)
        return self.alpha * student_loss + (1.0 - self.alpha) * distillation_loss

    def call(self, x, training=False):
        return self.student(x, training=training)
