"""Data-parallel training over ``torch.distributed``: one process per CPU slot or GPU.

Every rank holds the whole model and regenerates theta_0 and P from the seed itself, so the
only thing that crosses the wire each step is the gradient of the trainable values: theta_d
and the layerwise scales, 4 * d bytes in float32, instead of the 4 * D a dense model needs.

    dist = init("cpu")                    # reads torchrun's RANK / WORLD_SIZE; gloo on CPU, NCCL on GPU
    result = fit.train(sub, data, cfg, dist=dist)
    if dist.is_main: squeeze.save(sub, "model.sqz")
    dist.close()

What a rank does (DistributedDataParallel semantics, made explicit):

- every rank draws the same global order of the training set (same seed) and takes its own
  contiguous, disjoint slice of each global batch (:meth:`Replicas.shard`); the global batch
  is ``TrainConfig.batch_size``, so the run follows the single-process trajectory;
- after ``backward`` the trainable gradients are flattened into one buffer and all-reduced
  (:meth:`Replicas.sync_gradients`): each rank's mean-loss gradient is weighted by its share of
  the global batch and summed, which is the gradient of the global mean loss even when the
  last batch does not split evenly;
- at start-up the ranks compare the SHA-256 of their regenerated theta_0 and of P applied to a
  fixed probe (:meth:`Replicas.check_same_subspace`) and stop together if any differ;
- validation is split across ranks and the counts of correct answers are summed, so every rank
  sees the same accuracy and keeps the same best epoch; at each epoch's end the ranks also
  check that their theta_d are still bit-identical.

The bytes each rank puts into collectives are counted: ``bytes_per_step`` (the gradient
all-reduce payload) and ``bytes_total`` (that plus the start-up and per-epoch checks).
A ring all-reduce moves about 2 * (N - 1) / N times the payload over each rank's link.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn

from squeeze.errors import SqueezeError


@dataclass
class Replicas:
    """The process group a training run belongs to (a single process when ``world_size`` is 1).

    Args:
        rank: this process's index in [0, world_size).
        world_size: the number of processes.
        local_rank: the index on this machine (picks the GPU).
        device: where this rank's model and collectives live (``cpu`` or ``cuda:<local_rank>``).
        owns_group: True when :func:`init` created the process group (:meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns_group: bool = False
    bytes_per_step: int = 0
    bytes_total: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0: the one rank that prints and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch of indices; sizes differ by at most one."""
        if not self.active:
            return idx
        return torch.tensor_split(idx, self.world_size)[self.rank]

    def sync_gradients(self, params: list[nn.Parameter], local_n: int, global_n: int) -> None:
        """Replace each parameter's gradient by the gradient of the global mean loss.

        Args:
            params: the trainable parameters, in the same order on every rank.
            local_n: examples this rank's loss averaged over (0: its gradient counts as zero).
            global_n: examples in the global batch.
        """
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])  # (d,) theta_d then scales
        flat.mul_(local_n / global_n)
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        self.bytes_per_step = flat.numel() * flat.element_size()
        self.bytes_total += self.bytes_per_step
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n

    def sum_int(self, value: int) -> int:
        """The sum of an integer over all ranks."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        self.bytes_total += 8
        return int(t.item())

    def check_same_subspace(self, model: nn.Module) -> None:
        """Stop every rank with a :class:`SqueezeError` unless all regenerated the same subspace.

        A :class:`~squeeze.Subspace` is compared by the SHA-256 of theta_0, of P applied to a
        vector of ones (a different seed, projection, dim or architecture changes one of them)
        and of the starting theta_d and scales.
        Any other module is made identical instead: rank 0's parameters and buffers are broadcast,
        as DistributedDataParallel does at construction.
        """
        if not self.active:
            return
        if not hasattr(model, "theta_0") or not hasattr(model, "projection"):
            self._broadcast(list(model.parameters()) + list(_persistent_buffers(model)))
            return
        from squeeze.subspace import digest_of

        with torch.no_grad():
            probe = model.projection(torch.ones_like(model.theta_d))
        mine = bytes.fromhex(digest_of(model.theta_0)) + bytes.fromhex(digest_of(probe)) + _trainable_digest(model)
        rows = self._gather_bytes(mine)
        fix = "every process must get the same --arch, --data, --dim, --seed and --projection"
        for k, what in enumerate(("theta_0", "projection P", "starting theta_d")):
            _raise_if_differ([r[32 * k : 32 * (k + 1)] for r in rows], what, fix)

    def check_in_sync(self, model: nn.Module) -> None:
        """Stop every rank unless the trainable values are still bit-identical on all ranks."""
        if not self.active:
            return
        rows = self._gather_bytes(_trainable_digest(model))
        _raise_if_differ(rows, "trained values", "the replicas drifted apart; rerun with the same software on every node")

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's persistent buffers (BatchNorm statistics), as DDP does."""
        if self.active:
            self._broadcast(list(_persistent_buffers(model)))

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def close(self) -> None:
        """Wait for every rank, then destroy the process group if :func:`init` created it."""
        if self.owns_group and td.is_initialized():
            td.barrier()  # no rank tears down its connections while a peer still uses them
        self._teardown()

    def _teardown(self) -> None:
        if self.owns_group and td.is_initialized():
            td.destroy_process_group()
        self.owns_group = False

    def _gather_bytes(self, payload: bytes) -> list[bytes]:
        mine = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self.device)
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        td.all_gather(rows, mine)
        self.bytes_total += len(payload)
        return [bytes(r.cpu().tolist()) for r in rows]

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for t in tensors:
                td.broadcast(t.data, src=0)
                self.bytes_total += t.numel() * t.element_size()


def _trainable_digest(model: nn.Module) -> bytes:
    h = hashlib.sha256()
    for p in model.parameters():
        if p.requires_grad:
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes())
    return h.digest()


def _persistent_buffers(model: nn.Module):
    keys = set(model.state_dict())
    for name, b in model.named_buffers():
        if name in keys:
            yield b


def _raise_if_differ(rows: list[bytes], what: str, fix: str) -> None:
    ref = rows[0]
    differ = [r for r, row in enumerate(rows) if row != ref]
    if not differ:
        return
    names = ", ".join(str(r) for r in differ)
    raise SqueezeError(
        f"{'ranks' if len(differ) > 1 else 'rank'} {names} of {len(rows)} {'have' if len(differ) > 1 else 'has'} a different {what} from rank 0 "
        f"(SHA-256 {rows[differ[0]].hex()[:12]} vs {ref.hex()[:12]}); {fix}"
    )


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str = "cpu", timeout_s: float = 600.0) -> Replicas:
    """Join the process group torchrun describes, or return a single-process :class:`Replicas`.

    Uses gloo for ``device="cpu"`` and NCCL for ``cuda`` (each rank takes GPU ``LOCAL_RANK``).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (``cuda:N`` only with one process).
        timeout_s: how long a collective waits for a missing rank before failing.

    Returns:
        The :class:`Replicas` to pass to :func:`squeeze.fit.train`; call ``close()`` at the end.
    """
    world = env_world_size()
    if world <= 1:
        return Replicas(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if device != "cuda":
            raise SqueezeError(f"device={device} names one GPU but {world} processes were launched; use device=cuda (each process takes the GPU of its LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise SqueezeError(f"process {rank} has LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPUs; launch at most that many processes per node")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if td.is_initialized():
        return Replicas(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local_rank, device=device)
    kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
    td.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    replicas = Replicas(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local_rank, device=device, owns_group=True)
    atexit.register(replicas._teardown)  # error paths: no barrier, a peer may be stuck elsewhere
    return replicas


def current(device: str = "cpu") -> Replicas:
    """The :class:`Replicas` of an already initialized default process group, else a single process."""
    if td.is_available() and td.is_initialized() and td.get_world_size() > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return Replicas(rank=td.get_rank(), world_size=td.get_world_size(), local_rank=local_rank, device=device)
    return Replicas(device=device)


__all__ = ["Replicas", "current", "env_world_size", "init"]
