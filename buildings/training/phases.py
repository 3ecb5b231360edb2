"""Training phases: the encoder frozen for the first ``freeze_encoder_epochs``, then trained (its
BatchNormalization layers kept in inference mode, ``models.set_encoder_trainable``) with the
learning rate warmed up again from the unfreezing epoch (``objective.WarmupCosine``).

Each phase is one ``model.fit`` over its epochs, compiled afresh (freezing changes the trainable
weights): the optimiser's step count continues across phases, so the per-step warmup + cosine
schedule carries on. A resumed run starts in the phase of its first unfinished epoch: the same
phase as its last committed epoch takes the model and optimiser from the backup weights, a later
one the model's weights only, with a fresh optimiser at the step count reached.

A wall-time cap can leave too few epochs after the freeze for the model to recover from unfreezing
(validation Dice dipped for 2-4 epochs after it in the measured runs, RESULTS.md, issue 26): when
the time budget's plan leaves fewer than ``MIN_UNFROZEN_EPOCHS`` after the frozen ones, the encoder
stays frozen for the whole run (its frozen phase goes on, same optimiser, no re-warmup). A run that
is not cut short by its cap unfreezes as asked.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from buildings.models import get_encoder, set_encoder_trainable
from buildings.training.callbacks import EpochCommit
from buildings.training.distributed import ONE_DEVICE, Replicas

__all__ = ["MIN_UNFROZEN_EPOCHS", "Phase", "plan_phases", "stays_frozen", "train_phases"]

# Epochs a model needs after unfreezing to pass its frozen best again: the measured dips (DeepLabV3+
# seed 0, U-Net seed 1; RESULTS.md, issue 26) recovered after 3 and 4 unfrozen epochs.
MIN_UNFROZEN_EPOCHS = 4


@dataclass(frozen=True)
class Phase:
    """Epochs ``first``..``last`` (0-based, ``last`` excluded) of phase ``index``."""

    index: int
    first: int
    last: int
    encoder_trainable: bool


def plan_phases(epochs: int, freeze_epochs: int) -> list[Phase]:
    """The phases of a run of ``epochs`` with the encoder frozen for ``freeze_epochs`` (0: one phase)."""
    if not freeze_epochs:
        return [Phase(0, 0, epochs, True)]
    frozen = min(freeze_epochs, epochs)  # a run shorter than the freezing never unfreezes, nor runs longer
    return [Phase(0, 0, frozen, False), Phase(1, frozen, epochs, True)]


def stays_frozen(planned: int, epochs: int, first_unfrozen: int) -> bool:
    """Whether a run planned to decay over ``planned`` of its ``epochs`` (a wall-time cap shortened
    it when fewer) keeps its encoder frozen past epoch ``first_unfrozen``: only when the cap leaves
    fewer than ``MIN_UNFROZEN_EPOCHS`` after it."""
    return planned < epochs and planned - first_unfrozen < MIN_UNFROZEN_EPOCHS


def train_phases(trainer, objective, batches, run, *, state, callbacks, verbose,
                 replicas: Replicas = ONE_DEVICE) -> int:
    """Train ``trainer`` (a ``TrainingModel``) through the phases left after ``state`` (the last
    committed epoch, None from the start), committing every epoch to ``run``; ``callbacks`` run in
    every phase before the commit. Returns the epochs trained; stops early when a callback stops
    training."""
    config, steps = objective.config, batches.steps
    encoder = get_encoder(trainer.model)
    start = state.epoch if state else 0
    epochs_run, previous = 0, None
    for phase in plan_phases(config.epochs, config.freeze_encoder_epochs if encoder is not None else 0):
        if phase.last <= phase.first or start >= phase.last:
            continue  # nothing to do, or already finished before a resume
        if phase.index > 0 and _keep_frozen(objective, phase, state, start, announce=replicas.chief and config.verbose != 0):
            phase = Phase(0, phase.first, phase.last, False)  # the frozen phase goes on
        begin = max(phase.first, start)
        if previous is not None and previous.index == phase.index:
            pass  # the frozen phase continued in this call: same compiled model, optimiser and step count
        else:
            if encoder is not None:
                set_encoder_trainable(encoder, phase.encoder_trainable)
                if phase.index > 0:  # unfrozen after a frozen phase: warm the learning rate up again
                    objective.plan.rewarm_epoch = phase.first
            objective.compile(trainer)
            if begin == start and state is not None and replicas.chief:  # the first phase of a resumed run
                _restore(trainer, run, state, phase.index, done_steps=begin * steps)
            elif begin:  # a later phase of this call (weights in memory), or a rank that receives rank 0's
                trainer.optimizer.build(trainer.trainable_variables)
                trainer.optimizer.iterations.assign(begin * steps)
            replicas.prepare(trainer)
        previous = phase
        batches.train.set_epoch(begin)
        # Last, so an epoch is committed only with everything the other callbacks added to its logs.
        commit = [EpochCommit(run, phase=phase.index, monitor=objective.monitor, export=trainer.model)]
        history = trainer.fit(batches.train, validation_data=batches.validation, epochs=phase.last,
                              initial_epoch=begin, steps_per_epoch=steps,
                              callbacks=[*callbacks, *(commit if replicas.chief else [])], verbose=verbose)
        epochs_run += len(history.epoch)
        if trainer.stop_training:
            break
    return epochs_run


def _keep_frozen(objective, phase: Phase, state, start: int, *, announce: bool) -> bool:
    """Whether the unfreezing that starts ``phase`` is skipped (:func:`stays_frozen`): decided when the
    run reaches it, from the time budget's plan; a run resumed past it keeps what its last
    committed epoch's phase says (0: it stayed frozen)."""
    if state is not None and start > phase.first:
        return state.phase == 0
    config = objective.config
    if not stays_frozen(objective.plan.epochs, config.epochs, phase.first):
        return False
    if announce:
        left = objective.plan.epochs - phase.first
        print(f"the {config.max_minutes:g}-minute cap fits {objective.plan.epochs} of {config.epochs} epochs: "
              f"{max(left, 0)} after the {phase.first} frozen would not recover from unfreezing (it takes about "
              f"{MIN_UNFROZEN_EPOCHS}), so the encoder stays frozen", flush=True)
    return True


def _restore(model, run, state, phase: int, done_steps: int) -> None:
    """Put a freshly compiled ``model`` where training stopped. Same phase: model and optimizer
    from the backup weights. A new phase (the encoder unfrozen): the model's weights only, with a
    fresh optimizer whose step count continues the schedule."""
    same_phase = state is not None and state.phase == phase
    if same_phase:
        model.optimizer.build(model.trainable_variables)
    if state is not None:
        with warnings.catch_warnings():  # a new phase: Keras warns that it skips the old optimizer's state
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(run.backup_dir / state.weights)
    if not same_phase and done_steps:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(done_steps)
