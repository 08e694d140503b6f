"""Model variants, per-layer op tables and stage widths (design §4.2, §4.3, §10), and training defaults (§6).

``OP_TABLES`` maps a config name to the PDC op list of every backbone layer: entry 0 is the initial block, entry i
the i-th DiffBlock in construction order (MobileViT blocks take no entry). ``BACKBONE_STAGES`` gives the widths
and block counts of the two backbones, ``MODELS`` maps a model name to its architecture settings;
``models.build_model`` reads all three. Nothing here imports anything of the project.
"""

from __future__ import annotations

CV = ("cv",)
CV_CD_AD = ("cv", "cd", "ad")
CV_CD_AD_RD = ("cv", "cd", "ad", "rd")

OP_TABLES: dict[str, tuple[tuple[str, ...], ...]] = {
    # Single-branch vanilla network; SDNet-A uses the first 10 entries.
    "baseline": (CV,) * 16,
    # SDNet / STDNet: the last block of each of the four stages also has an rd branch.
    "sdnet": (CV_CD_AD,) + (CV_CD_AD, CV_CD_AD, CV_CD_AD_RD) + (CV_CD_AD, CV_CD_AD, CV_CD_AD, CV_CD_AD_RD) * 3,
    # SDNet-A / STDNet-A: 9 DiffBlocks; only block1_3 has rd.
    "sdnet-a": (CV_CD_AD,) + (CV_CD_AD, CV_CD_AD, CV_CD_AD_RD) + (CV_CD_AD,) * 6,
}

# Ops an STDC branch may use on its (time x space) plane (design §3): rd reaches two taps away, which a 3x3 plane conv
# with one frame of temporal padding cannot express. The release's default tid is all three, in this order.
TEMPORAL_OPS = ("cv", "cd", "ad")

# Width of the initial block, and per backbone stage: (output channels, number of DiffBlocks, MobileViTv2 patch size
# or None). The first DiffBlock of every stage has stride 2; a MobileViTv2 block (depth 2) follows the DiffBlocks
# where a patch size is given (design §4.3, §4.5).
INIT_CHANNELS = 60
BACKBONE_STAGES: dict[str, tuple[tuple[int, int, int | None], ...]] = {
    "sdnet": ((60, 3, None), (120, 4, None), (240, 4, None), (240, 4, None)),
    "sdnet-a": ((60, 3, None), (120, 2, 2), (240, 2, 2), (240, 2, 1)),
}

# kind: 'image' or 'video' (which constructor build_model uses); backbone: the stage layout in models/sdnet.py;
# config: the default training op table; size: the input size the model is evaluated at (design §5).
MODELS: dict[str, dict] = {
    "sdnet": {"kind": "image", "backbone": "sdnet", "config": "sdnet", "size": 320},
    "sdneta": {"kind": "image", "backbone": "sdnet-a", "config": "sdnet-a", "size": 384},
    "stdnet": {"kind": "video", "backbone": "sdnet", "config": "sdnet", "size": 256},
    "stdneta": {"kind": "video", "backbone": "sdnet-a", "config": "sdnet-a", "size": 256},
}

# Training defaults per model kind (design §6.1 image SOD, §6.3 video SOD, flags §6.5): the defaults of the flags of
# train_sod.py / train_vsod.py (engine.training.settings.add_training_args). ``wd_factors`` scale --wd per parameter
# group (groups are chosen by parameter name in engine.training.loop.image_param_groups / video_param_groups).
TRAIN_DEFAULTS: dict[str, dict] = {
    "image": {
        "model": "sdnet", "train_data": "DUTS-TR", "val_data": "SOD", "size": 320,
        "epochs": 180, "batch_size": 24, "lr": 1e-3, "wd": 1e-4, "betas": (0.9, 0.99),
        "lr_type": "multistep", "lr_steps": (90, 150), "warmup": 5, "beta": 1.1, "bn": False,
        # one pass over the training set per scale and epoch, at round(s * size / 16) * 16, in this order
        "pass_scales": (1.5, 1.25, 0.75, 1.0),
        "wd_factors": {"scales": 0.5, "bn": 0.1, "other": 1.0},
    },
    "video": {
        "model": "stdnet", "train_lst": "dataset/train_video_lst.txt", "val_lst": "dataset/val_video_lst.txt",
        "val_cut": 0.25, "framegap": 4, "nframes": 8, "tid": ("cv", "cd", "ad"), "scales": (0.0, 1.0, 1.0),
        "nstdc": 1,
        "size": 256, "epochs": 60, "batch_size": 8, "lr": 1e-3, "wd": 1e-4, "betas": (0.9, 0.99),
        "lr_type": "multistep", "lr_steps": (30, 50), "lr_reduce": 0.05, "bn": True,
        "wd_factors": {"backbone": 0.5, "norm": 0.1, "other": 1.0},
    },
}

# How a training step computes the multi-branch blocks (models.dcr.set_train_form; --train-form): as one convolution
# each ('fused', the default) or branch by branch ('separate', the authors' arithmetic). The precisions are
# engine.hardware.PRECISIONS, for training (autocast) and inference alike.
TRAIN_FORMS = ("fused", "separate")

# The codebase's version, which serve.py reports at /v1/info.
VERSION = "1.0.0"

# What the input-reading flags accept (utils: parse-time checks). The smallest square input every model runs on:
# SDNet's and STDNet's five stride-2 stages end in a max-pool that needs at least 16 pixels a side (SDNet-A runs
# from 4). Images are refused above a pixel cap before they are decoded (data.guard; --max-megapixels): a
# 48-megapixel phone photo passes the default.
MIN_INPUT_SIZE = 16
MAX_INPUT_SIZE = 8192
DEFAULT_MAX_MEGAPIXELS = 64.0
# --pass-scales (image training) are multipliers of --size; a value outside this range is a typo (e.g. a size in px).
PASS_SCALE_RANGE = (0.25, 4.0)

# Peak memory of one training step (fused form, channels_last, fp32; forward, backward, Adam) per input pixel of a
# batch (per frame for video models), measured by bench/bench_train_memory.py on the CPU (BENCHMARKS.md). The training
# scripts refuse, before writing anything, a --size and --batch-size whose estimate exceeds the machine's memory.
TRAIN_BYTES_PER_PIXEL = {"sdnet": 1908, "sdneta": 2271, "stdnet": 7454, "stdneta": 6417}
