"""What training optimises and how it is scored: the loss, the metrics (one of them monitored to pick
the best epoch), and AdamW on a per-step warmup + cosine learning-rate schedule.

Not to be confused with ``buildings.task.Task`` (binary vs N classes): a :class:`TrainingObjective`
is built from a run's final options and the task of its data.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from buildings.config import FitConfig
from buildings.losses import get_loss
from buildings.task import Task

__all__ = ["TrainingObjective"]


@dataclass(frozen=True)
class TrainingObjective:
    """The loss, metrics and optimiser of a run: ``config`` final (``buildings.config.resolve_fit_config``),
    ``task`` the data's, ``steps_per_epoch`` the training steps of an epoch (the schedule runs per step)."""

    config: FitConfig
    task: Task
    steps_per_epoch: int

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best epoch (higher is better)."""
        return self.task.monitor

    def schedule(self) -> keras.optimizers.schedules.LearningRateSchedule:
        """Linear warmup over ``warmup_epochs`` from 1 % of ``lr``, then cosine decay to
        ``min_lr_ratio`` of it at the last step of the last epoch."""
        config, steps = self.config, self.steps_per_epoch
        total = max(config.epochs * steps, 1)
        warmup = min(int(round(config.warmup_epochs * steps)), total - 1)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.lr * 0.01 if warmup else config.lr,
            decay_steps=max(total - warmup, 1), alpha=config.min_lr_ratio,
            warmup_target=config.lr if warmup else None, warmup_steps=warmup)

    def compile(self, model: keras.Model) -> keras.Model:
        """Compile ``model`` with a fresh optimiser (its step count at 0: a phase that does not start
        the run sets it, see ``buildings.training.phases``), the loss and the metrics."""
        config = self.config
        optimizer = keras.optimizers.AdamW(learning_rate=self.schedule(), weight_decay=config.weight_decay,
                                           global_clipnorm=config.clip_norm)
        options = {"class_weights": list(config.class_weights)} if config.class_weights is not None else {}
        model.compile(optimizer=optimizer, loss=get_loss(config.loss, **options),
                      metrics=self.task.metrics(config.threshold))
        return model
