"""What training optimises and how it is scored: the loss, the metrics (one of them monitored to pick
the best epoch), and AdamW on a per-step warmup + cosine learning-rate schedule.

The schedule decays over the epochs the run is planned to train (:class:`SchedulePlan`): all of
them, or, under a wall-time cap, the epochs that fit it (``callbacks.TimeBudget`` plans them after
the first epoch of each phase, from its measured time), so a capped run ends with its learning rate
decayed rather than cut at its peak. When the encoder is unfrozen the learning rate warms up again
over ``warmup_epochs`` from 1 %, and a pretrained encoder always learns at ``encoder_lr_scale`` of
the rate (:func:`scale_learning_rate`): Adam moves every weight by about the learning rate a step
whatever its gradient, and the decoder's rate moved the pretrained weights far enough to wreck them
(issue 26: validation Dice 0.876 → 0.310 at the unfreezing).

Not to be confused with ``buildings.task.Task`` (binary vs N classes): a :class:`TrainingObjective`
is built from a run's final options and the task of its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

from buildings.config import FitConfig
from buildings.losses import get_loss
from buildings.models import get_encoder
from buildings.task import Task

__all__ = ["SchedulePlan", "TrainingObjective", "WarmupCosine", "scale_learning_rate"]


def scale_learning_rate(optimizer, variables, scale: float) -> None:
    """Make ``optimizer`` update ``variables`` at ``scale`` times its learning rate (the others at
    the rate itself). Keras has no parameter groups; its optimizers hand every update to one
    backend method with the learning rate as an argument (torch's fused foreach step, jax's and
    tensorflow's per-variable loop alike), so this instance's method runs it twice, once per group,
    keeping each backend's fast path. Weight decay keeps the full rate (1e-4 of it: no matter)."""
    chosen = {id(variable) for variable in variables}
    if not chosen or scale == 1:
        return
    update = type(optimizer)._backend_update_step

    def _backend_update_step(grads, trainable_variables, learning_rate):
        pairs = list(zip(grads, trainable_variables, strict=True))
        rest = [pair for pair in pairs if id(pair[1]) not in chosen]
        mine = [pair for pair in pairs if id(pair[1]) in chosen]
        if rest:
            update(optimizer, [g for g, _ in rest], [v for _, v in rest], learning_rate)
        if mine:
            update(optimizer, [g for g, _ in mine], [v for _, v in mine], learning_rate * scale)

    optimizer._backend_update_step = _backend_update_step


@dataclass
class SchedulePlan:
    """What the learning-rate schedule decays over: ``epochs`` (the run's, or fewer that fit its
    wall-time cap), and ``rewarm_epoch``, the 0-based epoch where the encoder was unfrozen (None: no
    re-warmup). Mutable: the time budget plans ``epochs``; a traced train step must be rebuilt
    after a change (``callbacks.TimeBudget`` does)."""

    epochs: int
    rewarm_epoch: int | None = None


@keras.saving.register_keras_serializable(package="buildings")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup over ``warmup_steps`` from 1 % of ``lr``, then cosine decay to ``alpha`` of it
    at the last step of ``plan.epochs``; from ``plan.rewarm_epoch`` on, multiplied by a second linear
    ramp from 1 % over ``warmup_steps`` (the encoder unfrozen)."""

    def __init__(self, lr: float, steps_per_epoch: int, warmup_steps: int, alpha: float, plan: SchedulePlan | None = None,
                 epochs: int | None = None, rewarm_epoch: int | None = None):
        self.lr, self.steps_per_epoch, self.warmup_steps, self.alpha = float(lr), int(steps_per_epoch), \
            int(warmup_steps), float(alpha)
        self.plan = plan if plan is not None else SchedulePlan(int(epochs or 1), rewarm_epoch)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        total = max(self.plan.epochs * self.steps_per_epoch, 1)
        warmup = min(self.warmup_steps, total - 1)
        if warmup > 0:
            warm = self.lr * (0.01 + 0.99 * ops.minimum(step / warmup, 1.0))
        else:
            warm = self.lr
        progress = ops.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
        cosine = self.lr * (self.alpha + (1 - self.alpha) * 0.5 * (1 + ops.cos(math.pi * progress)))
        value = ops.where(step < warmup, warm, cosine)
        if self.plan.rewarm_epoch is not None and self.warmup_steps > 0:
            start = float(self.plan.rewarm_epoch * self.steps_per_epoch)
            ramp = ops.clip(0.01 + 0.99 * (step - start) / self.warmup_steps, 0.01, 1.0)
            value = value * ops.where(step >= start, ramp, 1.0)
        return value

    def get_config(self):
        return {"lr": self.lr, "steps_per_epoch": self.steps_per_epoch, "warmup_steps": self.warmup_steps,
                "alpha": self.alpha, "epochs": self.plan.epochs, "rewarm_epoch": self.plan.rewarm_epoch}


@dataclass(frozen=True)
class TrainingObjective:
    """The loss, metrics and optimiser of a run: ``config`` final (``buildings.config.resolve_fit_config``),
    ``task`` the data's, ``steps_per_epoch`` the training steps of an epoch (the schedule runs per step)."""

    config: FitConfig
    task: Task
    steps_per_epoch: int
    plan: SchedulePlan = field(default=None)  # None: all of config.epochs, no re-warmup

    def __post_init__(self):
        if self.plan is None:
            object.__setattr__(self, "plan", SchedulePlan(self.config.epochs))

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best epoch (higher is better)."""
        return self.task.monitor

    def schedule(self) -> WarmupCosine:
        """The per-step schedule (:class:`WarmupCosine`) over :attr:`plan`: warmup over
        ``warmup_epochs`` from 1 % of ``lr``, cosine decay to ``min_lr_ratio`` of it at the last step
        of the planned epochs, and the same warmup again from the epoch the encoder was unfrozen."""
        config, steps = self.config, self.steps_per_epoch
        return WarmupCosine(config.lr, steps, int(round(config.warmup_epochs * steps)), config.min_lr_ratio,
                            plan=self.plan)

    def compile(self, model: keras.Model) -> keras.Model:
        """Compile ``model`` with a fresh optimiser (its step count at 0: a phase that does not start
        the run sets it, see ``buildings.training.phases``), the loss and the metrics."""
        config = self.config
        optimizer = keras.optimizers.AdamW(learning_rate=self.schedule(), weight_decay=config.weight_decay,
                                           global_clipnorm=config.clip_norm)
        options = {"class_weights": list(config.class_weights)} if config.class_weights is not None else {}
        model.compile(optimizer=optimizer, loss=get_loss(config.loss, **options),
                      metrics=self.task.metrics(config.threshold))
        encoder = get_encoder(getattr(model, "model", model))  # a TrainingModel holds the segmentation model
        if encoder is not None and encoder.trainable and config.encoder_weights not in (None, "none"):
            scale_learning_rate(optimizer, encoder.trainable_weights, config.encoder_lr_scale)
        return model
