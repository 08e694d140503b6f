"""The "inductor" backend: the channels_last model compiled by TorchInductor, with its weights frozen, once per input
shape (15-30 s cold on 2 cores; TorchInductor keeps its own on-disk cache).

Each shape gets a compiled function of its own code object. Dynamo keeps its compiled graphs per code object and,
past ``recompile_limit`` (8) graphs of one code object, silently runs the rest eagerly: one shared function would
make the maps of a run's ninth shape depend on the shapes before it. With one code object per shape no limit is
reached, and a network the runner drops takes its graphs with it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import types

import torch

from engine.inference.backends import Backend, BackendError, Network
from utils import LOGGER_NAME

__all__ = ["InductorBackend"]

_NAMES = itertools.count()


def _network_template(x: torch.Tensor) -> torch.Tensor:
    return model(x)  # noqa: F821 - ``model`` is the global of each copy of this function (see `_one_shape_function`)


def _one_shape_function(model: torch.nn.Module):
    """A new function ``x -> model(x)`` with a code object of its own."""
    name = f"inductor_network_{next(_NAMES)}"
    code = _network_template.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, {"model": model, "__builtins__": __builtins__}, name)


def _freezing():
    """Inductor's ``freezing`` (weights as constants: oneDNN-prepacked convs with fused ReLU/add) must be on while
    dynamo traces, not only in inductor's options. A private setting, checked against the pinned torch (2.14.1,
    tests/test_backends.py::test_inductor_compiles_every_shape_past_dynamos_recompile_limit spies on it); where it
    is missing, compiling goes on without it, with a warning."""
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config, "freezing"):
        logging.getLogger(LOGGER_NAME).warning("torch %s has no inductor freezing setting: compiling without frozen "
                                           "weights (slower)", torch.__version__)
        return contextlib.nullcontext()
    return inductor_config.patch(freezing=True)


class _DropCudaHomeNote(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." note, logged when inductor first imports its
    C++ extension tools on a machine with a CUDA toolkit but no GPU: noise for a CPU compile."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


@contextlib.contextmanager
def quiet_cuda_home():
    """`_DropCudaHomeNote` on torch's cpp_extension logger for the duration of a compile, then removed."""
    logger, note = logging.getLogger("torch.utils.cpp_extension"), _DropCudaHomeNote()
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


class _CompiledNetwork(Network):
    """Compiled at its first pass (dynamo needs a real input); an error of the compiler is a `BackendError`, an
    error of the model itself (which the eager model raises too) is raised as it is."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(torch.compile(_one_shape_function(model), dynamic=False, fullgraph=True))
        self.model, self.compiled = model, False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled:
            return self.run(x)
        try:
            with _freezing(), quiet_cuda_home():
                out = self.run(x)
        except Exception as err:
            self.model(x)  # the model's own error, if it is one
            raise BackendError(f"--backend inductor: compiling failed ({str(err).splitlines()[0]}); --backend "
                               "eager runs without compiling") from err
        self.compiled = True
        return out


class InductorBackend(Backend):
    name = "inductor"

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        return _CompiledNetwork(self.model)
