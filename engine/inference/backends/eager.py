"""The eager PyTorch backends: "eager", the plain NCHW float32 model (for comparison: exactly the model given), and
"channels_last", NHWC weights and activations, in which oneDNN runs the depthwise convolutions, pools and
element-wise ops 2-2.5x faster than NCHW on the CPU. One network serves every input shape."""

from __future__ import annotations

import torch

from engine.inference.backends import Backend, Network

__all__ = ["EagerBackend", "ChannelsLastBackend"]


class EagerBackend(Backend):
    """The model as given, NCHW, every pass eager."""

    name = "eager"
    memory_format = torch.contiguous_format
    keeps_model = True

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        return Network(self.model)


class ChannelsLastBackend(EagerBackend):
    """The model in channels_last memory format, pre-biases that are exactly zero skipped, every pass eager."""

    name = "channels_last"
    memory_format = torch.channels_last
    keeps_model = False
