"""The learning-rate schedule (``objective.WarmupCosine``) and its plan: the same warmup + cosine as
Keras's ``CosineDecay`` when nothing changes it, a second warmup from the epoch the encoder is
unfrozen, and under a wall-time cap a decay planned over the epochs that fit (``TimeBudget``),
which a resumed run continues."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from buildings.config import FitConfig
from buildings.task import Task
from buildings.training import callbacks as callbacks_module
from buildings.training.callbacks import TimeBudget
from buildings.training.objective import SchedulePlan, TrainingObjective, WarmupCosine
from buildings.training.run_dir import RunDirectory
from buildings.training.trainer import _planned_epochs


def values(schedule, steps):
    return np.array([float(keras.ops.convert_to_numpy(schedule(step))) for step in steps])


def test_without_a_change_it_is_kerass_warmup_cosine():
    config = FitConfig(epochs=5, lr=0.002, warmup_epochs=1.0)
    ours = TrainingObjective(config, Task(1), steps_per_epoch=10).schedule()
    theirs = keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.002 * 0.01, decay_steps=40, alpha=0.01,
                                                    warmup_target=0.002, warmup_steps=10)
    steps = range(0, 50)
    np.testing.assert_allclose(values(ours, steps), values(theirs, steps), rtol=1e-5)


def test_the_unfrozen_encoder_gets_a_second_warmup():
    plan = SchedulePlan(epochs=10, rewarm_epoch=2)
    schedule = WarmupCosine(0.002, steps_per_epoch=10, warmup_steps=10, alpha=0.01, plan=plan)
    plain = WarmupCosine(0.002, steps_per_epoch=10, warmup_steps=10, alpha=0.01, plan=SchedulePlan(10))
    before, at, after = values(schedule, [19, 20, 35]), values(plain, [19, 20, 35]), None
    assert before[0] == pytest.approx(at[0]), "nothing changes before the unfreezing epoch"
    assert before[1] == pytest.approx(0.01 * at[1]), "the unfreezing step starts from 1 %"
    assert before[2] == pytest.approx(at[2]) and after is None, "one warmup later, the plain schedule again"
    assert WarmupCosine.from_config(schedule.get_config()).plan == plan


def test_a_shorter_plan_decays_the_rate_by_its_own_end():
    plan = SchedulePlan(epochs=30)
    schedule = WarmupCosine(0.002, steps_per_epoch=10, warmup_steps=10, alpha=0.01, plan=plan)
    assert values(schedule, [99])[0] > 0.5 * 0.002, "planned over 30 epochs, epoch 10 is still high"
    plan.epochs = 10
    assert values(schedule, [100])[0] == pytest.approx(0.002 * 0.01, rel=1e-3), "planned over 10: decayed"


class FakeModel:
    def __init__(self):
        self.rebuilt = 0
        self.stop_training = False

    def make_train_function(self, force=False):
        self.rebuilt += force


def test_the_time_budget_plans_the_epochs_that_fit_once_a_phase(monkeypatch):
    clock = iter([0.0, 100.0, 160.0, 160.0, 220.0, 220.0, 300.0])  # start, epoch 1 ends at 60 s ...
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: next(clock))
    plan = SchedulePlan(epochs=30)
    budget = TimeBudget(10, start=next(clock), plan=plan, epochs=30)  # 600 s
    budget.set_model(FakeModel())
    budget.on_train_begin()
    logs = {}
    budget.on_epoch_begin(0)          # at 100 s
    budget.on_epoch_end(0, logs)      # at 160 s, the epoch took 60 s: 440 s left fit 7 more
    assert plan.epochs == 8 and logs["planned_epochs"] == 8 and budget.model.rebuilt == 1
    budget.on_epoch_begin(1)
    budget.on_epoch_end(1, logs := {})  # not the phase's first epoch: the plan stands
    assert plan.epochs == 8 and logs["planned_epochs"] == 8 and budget.model.rebuilt == 1
    budget.on_train_begin()             # the next phase: planned again from its first epoch (80 s)
    budget.on_epoch_begin(2)
    budget.on_epoch_end(2, logs := {})  # at 300 s: 300 s left fit 3 more
    assert plan.epochs == 6 and budget.model.rebuilt == 2 and not budget.model.stop_training


def test_the_plan_never_passes_the_epochs_asked_for(monkeypatch):
    clock = iter([0.0, 0.0, 1.0])
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: next(clock))
    plan = SchedulePlan(epochs=4)
    budget = TimeBudget(60, start=next(clock), plan=plan, epochs=4)
    budget.set_model(FakeModel())
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    budget.on_epoch_end(0, {})
    assert plan.epochs == 4 and budget.model.rebuilt == 0, "an unchanged plan does not rebuild the step"


def test_a_resumed_run_continues_its_plan(tmp_path):
    run = RunDirectory(tmp_path)
    (tmp_path / "history.csv").write_text("epoch,loss,planned_epochs\n1,0.5,30\n2,0.4,12\n3,0.3,11\n")
    assert _planned_epochs(run, FitConfig(epochs=30)) == 11
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n")
    assert _planned_epochs(run, FitConfig(epochs=30)) == 30, "no cap: all the epochs"


def test_a_pretrained_encoder_learns_at_its_share_of_the_rate():
    """Adam's first step moves every weight by about the learning rate whatever its gradient: the
    scaled group must move ``scale`` times as far as the rest, through Keras's own apply path."""
    from buildings.training.objective import scale_learning_rate

    encoder, decoder = keras.Variable(np.ones((4, 4), "float32")), keras.Variable(np.ones((4, 4), "float32"))
    optimizer = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.0)
    scale_learning_rate(optimizer, [encoder], 0.1)
    gradient = keras.ops.convert_to_tensor(np.full((4, 4), 3.0, "float32"))
    optimizer.apply([gradient, gradient], [encoder, decoder])
    moved_encoder = 1 - keras.ops.convert_to_numpy(encoder)
    moved_decoder = 1 - keras.ops.convert_to_numpy(decoder)
    np.testing.assert_allclose(moved_decoder, 0.01, rtol=1e-3)
    np.testing.assert_allclose(moved_encoder, 0.001, rtol=1e-3)
