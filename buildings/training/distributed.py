"""Data-parallel training on several devices, processes and hosts, on the engines that exist for it.

``buildings fit`` trains one model on ``Replicas.devices`` devices; every device holds a copy of the
weights and sees its own slice of each global batch, and the gradients are averaged every step, so
a step on N devices is the step one device would take on the whole global batch.

* **jax: ``keras.distribution``.** ``--devices N|all`` sets ``keras.distribution.DataParallel``
  over the local accelerators before the model is built; Keras's JAX trainer then shards each batch
  over them and the step is one SPMD program: gradients, BatchNorm statistics and metrics are those
  of the global batch, with no code of ours in the step. Several hosts: each process calls
  ``keras.distribution.initialize()`` (``KERAS_DISTRIBUTION_JOB_ADDRESSES`` / ``_NUM_PROCESSES`` /
  ``_PROCESS_ID``, as the Keras distribution guide documents) and feeds its own shard of the global
  batch. One upstream limit bites: a batch whose size does not divide by the device count cannot be
  sharded (validation's last batch), so validation batches are replicated on every device instead
  (:class:`ShardedTraining`), which gives the same numbers.
* **torch: ``torch.distributed``, one process per device, launched by ``torchrun``** (or by
  ``buildings fit --devices N``, which launches the same through torch's elastic launcher and turns a
  failed rank into one line). Keras 3.15's torch trainer has no DDP, so this module supplies the
  smallest correct piece: the segmentation model is wrapped in ``DistributedDataParallel`` for the
  training forward pass (gradients averaged in the backward pass, NCCL on GPUs, gloo on CPUs), the
  training metrics' states are summed over ranks before Keras reads them, the weights and optimizer
  state are broadcast from rank 0 at the start of every phase, and stop decisions (NaN, time budget,
  early stopping) are agreed by all ranks. BatchNorm statistics are per replica, as with PyTorch's
  DDP default (see the training guide for why there is no ``--sync-batchnorm``).
  Keras master has its own DDP (keras-team/keras#23316, for 3.16): when the pinned Keras has it,
  :func:`keras_has_own_ddp` turns true and this module steps aside (see the training guide).

Every process reads a disjoint shard of each epoch's permutation (the same permutation on every
rank, ``buildings.data.pipeline.SegmentationBatches``). ``--batch-size`` is per device: a step
trains on ``devices x batch_size`` images. Only rank 0 (the chief) writes the run directory and
validates; the others wait for it at the next step.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass

from buildings.errors import ConfigError

__all__ = ["LOST_PEER_EXIT", "ONE_DEVICE", "Replicas", "describe_failure", "keras_has_own_ddp", "launch_torch", "replicas_for",
           "start", "stop_together"]

# A rank whose peer died exits with this code, quietly (the launcher names the rank that failed first).
LOST_PEER_EXIT = 75
_TORCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Replicas:
    """Where one run trains: ``processes`` processes (this one is ``rank``), each driving
    ``local_devices`` devices. ``engine``: ``single``, ``torch`` (torch.distributed) or ``jax``
    (keras.distribution)."""

    engine: str = "single"
    rank: int = 0
    processes: int = 1
    local_devices: int = 1
    local_rank: int = 0

    @property
    def devices(self) -> int:
        return self.processes * self.local_devices

    @property
    def chief(self) -> bool:
        """Rank 0: the process that writes the run directory and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.devices > 1

    def process_batch(self, batch_size: int) -> int:
        """Images this process loads a step (``batch_size`` is per device)."""
        return batch_size * self.local_devices

    def global_batch(self, batch_size: int) -> int:
        return batch_size * self.devices

    def describe(self, batch_size: int) -> str:
        """``2 devices (torch.distributed, 2 processes) x 8 = 16 images a step``."""
        if not self.distributed:
            return f"1 device, {batch_size} images a step"
        how = {"torch": f"torch.distributed, {self.processes} processes",
               "jax": f"keras.distribution DataParallel, {self.processes} process(es)"}[self.engine]
        return f"{self.devices} devices ({how}) x {batch_size} = {self.global_batch(batch_size)} images a step"

    def record(self, batch_size: int) -> dict:
        """What config.json records."""
        return {**asdict(self), "devices": self.devices, "batch_size_per_device": batch_size,
                "global_batch_size": self.global_batch(batch_size)}

    # -- collectives (no-ops on one device) ----------------------------------------------------------
    def share(self, value):
        """Rank 0's ``value`` (any picklable object), on every process."""
        if self.processes == 1:
            return value
        if self.engine == "jax":
            return _jax_share(value)
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any."""
        if self.engine != "torch" or not self.distributed:
            return bool(flag)
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], device=_torch_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def prepare(self, trainer) -> None:
        """Before a phase's ``fit``: give every rank rank 0's weights and optimizer state, and wrap
        the model for DDP with the phase's trainable weights (torch; nothing on jax, whose step is
        one program over all devices)."""
        if self.engine != "torch" or not self.distributed or keras_has_own_ddp():
            return
        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        with torch.no_grad():
            variables = [*trainer.model.variables, *trainer.optimizer.variables]
            for variable in variables:  # one flat broadcast per dtype would be faster; this runs once a phase
                dist.broadcast(variable.value.data, src=0)
        device = _torch_device()
        # Keras keeps every variable (BatchNorm statistics included) as a torch Parameter, so DDP has no
        # buffers to sync; the channels-first convolutions of buildings.runtime.torch_speedups give some
        # gradients other strides than their bucket views, which DDP warns costs a copy (it is correct).
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ddp = DistributedDataParallel(trainer.model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=False)
        trainer.replicate(ddp, reduce_metrics=self.reduce_metrics)

    def reduce_metrics(self, variables) -> list:
        """The metric states summed over ranks (every metric here keeps sums: totals, counts,
        confusion matrices), in one all-reduce."""
        import torch
        import torch.distributed as dist

        values = [v.value.detach() for v in variables]
        flat = torch.cat([v.reshape(-1).to(torch.float64) for v in values])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        out, offset = [], 0
        for v in values:
            out.append(flat[offset: offset + v.numel()].reshape(v.shape).to(v.dtype))
            offset += v.numel()
        return out

    def close(self) -> None:
        if self.engine == "torch" and self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


ONE_DEVICE = Replicas()  # a run on one device, one process


def _jax_share(value):
    """Process 0's ``value`` on every jax process: its pickle, length first, then the bytes."""
    import pickle

    import numpy as np
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(value), dtype=np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.array(len(payload), dtype=np.int64)))
    padded = np.zeros(length, dtype=np.uint8)
    padded[: min(length, len(payload))] = payload[:length]
    return pickle.loads(np.asarray(multihost_utils.broadcast_one_to_all(padded)).tobytes())


def keras_has_own_ddp() -> bool:
    """Whether the installed Keras's torch trainer wraps models in DDP itself (Keras 3.16+)."""
    import keras

    if keras.backend.backend() != "torch":
        return False
    from keras.src.backend.torch.trainer import TorchTrainer

    return hasattr(TorchTrainer, "_initialize_ddp")


def _torch_device():
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def torch_environment() -> dict | None:
    """The rank variables ``torchrun`` sets, or None outside a launched process."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        values = {name: int(os.environ.get(name, "0")) for name in _TORCH_ENV}
    except ValueError:
        raise ConfigError(f"WORLD_SIZE / RANK / LOCAL_RANK must be integers, got "
                          f"{ {n: os.environ.get(n) for n in _TORCH_ENV} }") from None
    return values


def replicas_for(devices, backend: str) -> Replicas:
    """The replicas of a run asking for ``devices`` (None or 1: one; N; ``all``) on ``backend``,
    including what a launcher (torchrun, keras.distribution.initialize's variables) says."""
    wanted = _parse_devices(devices)
    if backend == "torch":
        env = torch_environment()
        if env is None or env["WORLD_SIZE"] <= 1:
            if wanted not in (None, 1):
                raise ConfigError(f"--devices {devices} on torch needs one process per device: run "
                                  f"`buildings fit --devices {devices} ...` from the command line, or torchrun "
                                  f"--nproc-per-node {devices} -m buildings fit ...")
            return Replicas()
        if wanted not in (None, "all") and wanted != env["WORLD_SIZE"]:
            raise ConfigError(f"--devices {devices} but torchrun started {env['WORLD_SIZE']} processes "
                              "(WORLD_SIZE): leave --devices out under torchrun, or make them agree")
        return Replicas("torch", rank=env["RANK"], processes=env["WORLD_SIZE"], local_rank=env["LOCAL_RANK"])
    if backend == "jax":
        return _jax_replicas(wanted, devices)
    if wanted not in (None, 1):
        raise ConfigError(f"--devices {devices}: the {backend} backend does not distribute training here; "
                          "KERAS_BACKEND=jax (keras.distribution) and torch (torch.distributed) do")
    return Replicas()


def _parse_devices(devices):
    if devices is None or devices == "all":
        return devices
    try:
        count = int(devices)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(f"--devices must be a positive number or 'all', got {devices!r}")
    return count


def _jax_replicas(wanted, asked) -> Replicas:
    import jax
    import keras

    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1 and jax.process_count() == 1:
        keras.distribution.initialize()  # multi-host: the coordinator, process count and id from the environment
    processes, local = jax.process_count(), len(jax.local_devices())
    if wanted is None or (wanted == 1 and processes == 1):
        return Replicas()
    count = local if wanted == "all" else wanted
    if count > local:
        raise ConfigError(f"--devices {asked}: this process sees {local} jax device(s) "
                          f"({jax.local_devices()[0].platform}); on a CPU, XLA_FLAGS="
                          f"--xla_force_host_platform_device_count={count} makes {count} host devices")
    if processes > 1 and count != local:
        raise ConfigError(f"--devices {asked}: a multi-host jax run uses every local device ({local}); "
                          "leave --devices out or pass all")
    return Replicas("jax", rank=jax.process_index(), processes=processes, local_devices=count)


def start(replicas: Replicas) -> Replicas:
    """Bring up what ``replicas`` trains on (once per process): torch's process group (NCCL on a
    GPU, gloo otherwise) or the jax distribution. Call before the model is built."""
    if not replicas.distributed:
        return replicas
    if replicas.engine == "torch":
        import torch
        import torch.distributed as dist

        if keras_has_own_ddp():
            raise ConfigError("this Keras wraps torch models in DDP itself (3.16+); buildings' own torch DDP "
                              "steps aside there but that path is not validated yet: pin keras<3.16 to train "
                              "on several GPUs with torch, or use KERAS_BACKEND=jax")
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(replicas.local_rank)
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    elif replicas.engine == "jax":
        import jax
        import keras

        devices = jax.devices() if replicas.processes > 1 else jax.local_devices()[: replicas.local_devices]
        keras.distribution.set_distribution(ShardedTraining(devices=devices))
    return replicas


def ShardedTraining(devices):  # noqa: N802 - builds a Keras class, so keras is imported on first use
    """``keras.distribution.DataParallel`` over ``devices`` that replicates validation batches
    (whose last batch need not divide by the device count, which jax cannot shard) and shards the
    training batches; :func:`stop_together`'s callback switches it while Keras evaluates."""
    import keras
    from keras.distribution import TensorLayout

    class _ShardedTraining(keras.distribution.DataParallel):
        replicate_data = False

        def get_data_layout(self, data_shape):
            if self.replicate_data:
                return TensorLayout([None] * len(data_shape), self.device_mesh)
            return super().get_data_layout(data_shape)

    return _ShardedTraining(devices=devices)


def stop_together(replicas: Replicas):
    """A Keras callback, last before the epoch commit, so that every rank stops at the same step
    (None on one device). After each step, any rank's stop (a NaN loss) stops all (torch); after
    each epoch, rank 0's decision (its time budget, its early stopping, which read its validation)
    is everyone's. On jax it replicates the validation batches while Keras evaluates."""
    if not replicas.distributed:
        return None
    import keras

    class StopTogether(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if replicas.engine == "torch":
                self.model.stop_training = replicas.any(self.model.stop_training)

        def on_epoch_end(self, epoch, logs=None):  # one jax process drives all its devices: nothing to agree
            self.model.stop_training = bool(replicas.share(bool(self.model.stop_training)))

        def on_test_begin(self, logs=None):
            _set_replicated_data(True)

        def on_test_end(self, logs=None):
            _set_replicated_data(False)

    return StopTogether()


def _set_replicated_data(on: bool) -> None:
    import keras

    distribution = keras.distribution.distribution()
    if distribution is not None and hasattr(distribution, "replicate_data"):
        distribution.replicate_data = on


def launch_torch(arguments: list[str], processes: int, *, run_dir: str | None, say=print) -> int:
    """Run ``buildings <arguments>`` in ``processes`` processes on this machine through torch's
    elastic launcher (what ``torchrun --standalone --nproc-per-node N`` does), no restarts. Returns
    0, or prints one line naming the rank that failed first (and how to resume) and returns 1."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its failure report is many lines; ours is one
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "buildings.cli", *arguments)
        return 0
    except ChildFailedError as failed:
        say(describe_failure(failed.failures, run_dir, processes))
        return 1
    finally:
        quiet.setLevel(level)


def describe_failure(failures: dict, run_dir: str | None, processes: int) -> str:
    """One line for a failed job (``failures``: rank -> torch elastic ``ProcessFailure``): the rank
    that failed first for a reason of its own — not because a peer was lost, not the launcher's
    SIGTERM to the others — how, and whether the run can be resumed."""
    import signal

    def knock_on(failure) -> bool:
        return failure.exitcode in (LOST_PEER_EXIT, -signal.SIGTERM)

    rank = min(failures, key=lambda r: (knock_on(failures[r]), failures[r].timestamp, r))
    code = failures[rank].exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    others = sorted(set(failures) - {rank})
    line = f"rank {rank} {how}; " + (f"ranks {others} were stopped" if others else "the other ranks were stopped")
    if run_dir and os.path.isfile(os.path.join(run_dir, "config.json")):
        line += f"; the run is resumable: buildings fit --resume {run_dir} --devices {processes}"
    return line
