"""The inference wing: from a checkpoint to maps, on whichever runtime runs the network.

- `engine.inference.loading`: a model from a checkpoint as the scripts' model flags ask (`models.load_model`);
- `engine.inference.runner`: the one place deciding how a network runs (`prepare_for_inference`,
  `InferenceRunner`); `engine.inference.backends` its runtimes, one module each; `engine.inference.network_cache`
  compiled networks kept on disk between runs; `engine.inference.export` the one ONNX export;
- `engine.inference.predictor`: the one way from an image, clip or video to its 8-bit maps and files
  (`Predictor`, `ModelInput`), which predict.py, the map generators and serve.py use;
- `engine.inference.generation`: the map generators' shared job, `engine.inference.sharding` its share of a test
  set under torchrun / srun;
- `engine.inference.speed`: the timing protocol of ``speed_*.py``.

It uses the floor of `engine` and never imports `engine.training`. The names most callers need are here:
"""

from engine.inference.predictor import ModelInput, Predictor
from engine.inference.runner import BackendError, InferenceRunner, prepare_for_inference

__all__ = ["BackendError", "InferenceRunner", "ModelInput", "Predictor", "prepare_for_inference"]
