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
}
