"""Batched inference outside the Trainer: a function of a network applied to many inputs, chunk by chunk, in
eval mode and without gradients. Every place that runs a model over a whole split (evaluation, analysis,
figures, k-means features) goes through `in_chunks`, so the mode is restored even when a chunk fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

# inputs per forward pass: bounds the activations (the ascent holds B x K*R per step) on any device
INFERENCE_CHUNK = 512


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode for the block (BatchNorm uses its running statistics, nothing updates them),
    then back in the mode it was in, whatever the block raised."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _concatenate(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {key: _concatenate([part[key] for part in parts]) for key in first}
    return [_concatenate(list(items)) for items in zip(*parts, strict=True)]  # e.g. the states x_0..x_T


@torch.no_grad()
def in_chunks(
    module: nn.Module, fn: Callable[[Tensor], Any], inputs: Tensor, chunk: int = INFERENCE_CHUNK
) -> Any:
    """fn(part) for every `chunk` inputs moved to the module's device, in eval mode, the outputs (a tensor, a
    list of tensors or a dict of tensors per part) concatenated along the batch dimension."""
    device = next(module.parameters()).device
    with evaluating(module):
        return _concatenate([fn(part.to(device)) for part in inputs.split(chunk)])
