"""The jobs between the thin scripts and `models`, `data`, `Evaluation`: three wings on a shared floor.

The floor, which any wing may use and which uses none:

- `engine.distributed`: this process's place in a run (torchrun, srun), the process group, one process per GPU;
- `engine.hardware`: the precisions, what the CPU computes natively (bf16) and right, a process's memory;
- `engine.checkpoint_file`: the one checkpoint writer;
- `engine.hub`: the released checkpoints, downloaded and verified, and the models ``hubconf.py`` serves.

The wings (`engine.training`, `engine.inference`, `engine.serving`; each package's docstring lists its modules):
training and inference never import each other; serving stands on inference.

Nothing below this package imports it, and it never imports a script.
"""
