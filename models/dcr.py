"""Difference Convolution Reparameterization (DCR) of a whole model (design §2.3).

Conversion works at module level: every module with a ``reparameterize()`` method (InitialBlock, DiffBlock, and
the video models' temporal layers) swaps itself for its single-conv form. Nothing matches parameter names.
"""

from __future__ import annotations

import copy

import torch.nn as nn

from configs import TRAIN_FORMS

__all__ = ["convert_model", "is_converted", "skip_zero_pre_biases", "set_train_form"]


def convert_model(model: nn.Module) -> nn.Module:
    """Converted (inference) copy of ``model``: a deep copy with ``reparameterize()`` called on every module that
    has it. The input model is left untouched; converting a converted model changes nothing. The result's state
    dict loads strictly into ``build_model(..., deploy=True)`` with the same name and config, and its outputs
    equal the training form's (eval mode) up to float rounding."""
    converted = copy.deepcopy(model)
    for module in list(converted.modules()):
        if hasattr(module, "reparameterize"):
            module.reparameterize()
    return converted


def is_converted(model: nn.Module) -> bool:
    """True when no convertible module of ``model`` is left in training (multi-branch) form."""
    return all(getattr(m, "deploy", True) for m in model.modules() if hasattr(m, "reparameterize"))


def skip_zero_pre_biases(model: nn.Module) -> int:
    """In place, for an inference copy of a converted model: drop every DiffBlock pre-bias that is exactly zero
    (all of them in models trained without BN, and with random weights), saving one full read and write of each
    block's input per pass. The outputs stay bitwise the same. Returns the number of blocks changed."""
    blocks = [module for module in model.modules() if hasattr(module, "skip_zero_pre_bias")]
    return sum(block.skip_zero_pre_bias() for block in blocks)


def set_train_form(model: nn.Module, form: str) -> nn.Module:
    """In place: how every multi-branch training-form block of ``model`` computes, 'separate' (branch by branch,
    the authors' arithmetic; the default of a new model) or 'fused' (one convolution with the branches' mixed
    kernel wherever the branches are linear; see ``models.layers``). Parameters, state dict and outputs stay the
    same (up to float rounding); returns ``model``."""
    if form not in TRAIN_FORMS:
        raise ValueError(f"unknown train form {form!r}; choose from {', '.join(TRAIN_FORMS)}")
    for module in model.modules():
        if hasattr(module, "train_form"):
            module.train_form = form
    return model
