"""The training wing: from the flags of ``train_sod.py`` / ``train_vsod.py`` to a trained checkpoint.

- `engine.training.settings`: a run's flags resolved once (`TrainSettings`) and its task as data (`TrainingTask`);
- `engine.training.startup`: the one start-up sequence of a run, which both training scripts call;
- `engine.training.preflight`: the checks before the first step (memory, training pairs);
- `engine.training.step`: how a step runs (fused or separate blocks, precision, layout, compilation);
- `engine.training.loop`: parameter groups, learning-rate schedule, the training loop, validation;
- `engine.training.checkpoints`: a run's files (checkpoints, resuming, RNG state, args.json, the log files).

It uses the floor of `engine` and never imports `engine.inference` or `engine.serving`.
"""
