"""Model variants and per-layer op tables (SPEC §4.2, §10).

``OP_TABLES`` maps a config name to the PDC op list of every backbone layer: entry 0 is the initial block, entry i
the i-th DiffBlock in construction order (MobileViT blocks take no entry). ``MODELS`` maps a model name to its
architecture settings; ``models.build_model`` reads both.
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

# kind: 'image' or 'video' (which constructor build_model uses); backbone: the stage layout in models/sdnet.py;
# config: the default training op table; size: the input size the model is evaluated at (SPEC §5).
MODELS: dict[str, dict] = {
    "sdnet": {"kind": "image", "backbone": "sdnet", "config": "sdnet", "size": 320},
    "sdneta": {"kind": "image", "backbone": "sdnet-a", "config": "sdnet-a", "size": 384},
    "stdnet": {"kind": "video", "backbone": "sdnet", "config": "sdnet", "size": 256},
    "stdneta": {"kind": "video", "backbone": "sdnet-a", "config": "sdnet-a", "size": 256},
}

# Training defaults per model kind (SPEC §6.1 image SOD, §6.3 video SOD, flags §6.5): the defaults of the flags of
# train_sod.py / train_vsod.py (utils.add_common_args). ``wd_factors`` scale --wd per parameter group (groups are
# chosen by parameter name in utils.image_param_groups / utils.video_param_groups).
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
        "size": 256, "epochs": 60, "batch_size": 8, "lr": 1e-3, "wd": 1e-4, "betas": (0.9, 0.99),
        "lr_type": "multistep", "lr_steps": (30, 50), "lr_reduce": 0.05, "bn": True,
        "wd_factors": {"backbone": 0.5, "norm": 0.1, "other": 1.0},
    },
}
