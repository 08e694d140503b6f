"""The jobs between the thin scripts and `models`, `data`, `Evaluation`: one module per job.

- `engine.settings`: a training run's flags resolved once (`TrainSettings`) and its task as data (`TrainingTask`);
- `engine.startup`: the one start-up sequence of a training run that ``train_sod.py`` and ``train_vsod.py`` call;
- `engine.train_step`: how a training step runs (fused or separate blocks, precision, layout, compilation);
- `engine.train`: parameter groups, learning-rate schedule, the training loop, validation;
- `engine.distributed`: this process's place in a run, the process group, spawning one process per GPU;
- `engine.checkpoints`: the one checkpoint writer, training checkpoints, RNG state, resuming, the run's log files;
- `engine.loading`: a model from a checkpoint and the flags;
- `engine.backends`: the inference backends (eager / channels_last, inductor, openvino, cuda_graphs), one module
  each behind one interface; `engine.export` the one ONNX export; `engine.network_cache` compiled networks kept
  on disk between runs;
- `engine.inference`: the inference runner, which fixes the backend from the request and sends each input to the
  network of its shape;
- `engine.maps`: 8-bit saliency maps from a runner (the map generators, predict.py);
- `engine.speed`: parameter and MAC counts and the timing protocol of ``speed_*.py``;
- `engine.hardware`: what the CPU computes natively (bf16), for the backends and training.

Nothing below this package imports it, and it never imports a script.
"""
