"""The "cuda_graphs" backend, the CUDA default: the model's passes for one input shape captured into a CUDA graph and
replayed, which removes the launch overhead of its many small kernels.

A shape's graph is captured at its third pass: shapes met once or twice (full-resolution maps of varied sizes) never
pay for a capture, and the two eager passes before it run the very kernels the graph then replays. NCHW is what
cuDNN's depthwise kernels and the release use; channels_last has not been measured on a GPU yet (BENCHMARKS.md).
"""

from __future__ import annotations

import torch

from engine.inference.backends import Backend, BackendError, Network

__all__ = ["CUDA_GRAPH_AFTER", "CudaGraphBackend"]

CUDA_GRAPH_AFTER = 2


class _GraphNetwork(Network):
    """Eager for the first CUDA_GRAPH_AFTER passes, then a captured graph replayed."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__(model)
        self.device, self.passes = device, 0
        self.graph: tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self.passes += 1
            if self.passes <= CUDA_GRAPH_AFTER:
                return self.run(x)
            try:
                self.graph = self._capture(x)
            except RuntimeError as err:
                raise BackendError(f"--backend cuda_graphs: capturing failed ({str(err).splitlines()[0]}); "
                                   "--backend eager runs without graphs") from err
        graph, static_input, static_output = self.graph
        static_input.copy_(x)
        graph.replay()
        # The graph overwrites static_output on its next replay: hand out a copy.
        return static_output.clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_input = x.clone()
        # Capture needs one pass on a side stream first (lazy allocations, cuDNN workspace).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.run(static_input)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.run(static_input)
        return graph, static_input, static_output


class CudaGraphBackend(Backend):
    name = "cuda_graphs"
    memory_format = torch.contiguous_format

    def prepare(self, shape: tuple[int, ...], streams: int) -> Network:
        return _GraphNetwork(self.model, self.settings.device)
