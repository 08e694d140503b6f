"""The jobs between the thin scripts and `models`, `data`, `Evaluation`: one module per job.

- `engine.train`: parameter groups, learning-rate schedule, the training loop, validation, and the one start-up
  sequence that ``train_sod.py`` and ``train_vsod.py`` call;
- `engine.distributed`: this process's place in a run, the process group, spawning one process per GPU;
- `engine.checkpoints`: the one checkpoint writer, training checkpoints, RNG state, resuming, the run's log files;
- `engine.inference`: a model from a checkpoint and the flags, the inference runner, predicting maps;
- `engine.speed`: parameter and MAC counts and the timing protocol of ``speed_*.py``.

Nothing below this package imports it, and it never imports a script.
"""
