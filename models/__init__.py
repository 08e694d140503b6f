"""Models: PDC ops, layers, SDNet / SDNet-A (and the video models), DCR conversion, checkpoint reading and a model
from a checkpoint, and what a model costs (parameters, MACs).

``build_model`` (`models.factory`) is the one factory the scripts use; it reads ``configs.MODELS`` and
``configs.OP_TABLES``. `load_model` (`models.loading`) is the one way from a checkpoint to a model.
"""

from __future__ import annotations

from .checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    ModelDescription,
    describe_state_dict,
    load_checkpoint,
    load_state_dict_file,
    load_weights,
    read_checkpoint,
)
from .counting import count_macs, count_parameters
from .dcr import convert_model, is_converted, set_train_form, skip_zero_pre_biases
from .factory import build_model
from .loading import DEFAULT_NFRAMES, check_description, load_model
from .sdnet import SDNet, SDNetBackbone
from .stdnet import STDNet, preload_backbone

__all__ = [
    "build_model",
    "load_model",
    "check_description",
    "DEFAULT_NFRAMES",
    "count_parameters",
    "count_macs",
    "convert_model",
    "is_converted",
    "skip_zero_pre_biases",
    "set_train_form",
    "load_checkpoint",
    "load_state_dict_file",
    "load_weights",
    "read_checkpoint",
    "describe_state_dict",
    "CheckpointError",
    "LoadedCheckpoint",
    "ModelDescription",
    "SDNetBackbone",
    "SDNet",
    "STDNet",
    "preload_backbone",
]
