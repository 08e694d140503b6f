"""Map generation on several processes (torchrun, or srun as for training): each process's share of a test set,
and the totals that rank 0 reports. Shares are dealt by key, round-robin in order of first appearance (an image is
its own key; a video's clips share their video's), so every video stays whole in one process and the union of the
shares' maps is what one process writes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
import torch.distributed as dist

from engine.distributed import DistContext

__all__ = ["share", "summed"]


def share(keys: Sequence[Hashable], rank: int, world_size: int) -> list[int]:
    """The indices of the items (their ``keys``) that process ``rank`` of ``world_size`` takes."""
    order: dict[Hashable, int] = {}
    for key in keys:
        order.setdefault(key, len(order))
    return [index for index, key in enumerate(keys) if order[key] % world_size == rank]


def summed(values: list[int], ctx: DistContext) -> list[int]:
    """``values`` summed over every process of the run (itself for one process)."""
    if ctx.world_size <= 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64, device=ctx.device)
    dist.all_reduce(tensor)
    return [int(value) for value in tensor.tolist()]
