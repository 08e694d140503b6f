"""Shared script helpers: logging, device selection, and (later) checkpoints and the training loop.

Scripts import from here; this module never imports a script.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import configs
from data.readers import DataError, read_rgb
from data.transforms import preprocess_test
from models import CheckpointError, build_model, convert_model, load_state_dict_file, load_weights

LOGGER_NAME = "sdnet"


def setup_logger(savedir: str | os.PathLike | None = None, rank: int = 0) -> logging.Logger:
    """Console (and, if ``savedir`` is given, ``savedir/log.txt``) logger; ranks other than 0 log warnings only."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if savedir is not None and rank == 0:
        Path(savedir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(savedir) / "log.txt")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def select_device(gpu: str | None) -> torch.device:
    """Device for ``--gpu`` ('' or None: CPU; '0' or '0,1': the first listed CUDA device).

    Without CUDA a non-empty ``--gpu`` logs one warning and falls back to the CPU, so every README command also
    runs on a CPU-only machine.
    """
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logging.getLogger(LOGGER_NAME).warning("--gpu %s given but CUDA is not available: running on CPU", gpu)
        return torch.device("cpu")
    first = int(str(gpu).split(",")[0])
    return torch.device("cuda", first)


# ---------------------------------------------------------------------------------------------------------------------
# Inference: model from flags + checkpoint, map output (generate_salmaps_*.py, predict.py, export_onnx.py)


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Flags describing the model behind a checkpoint and how to run it, shared by the inference scripts."""
    group = parser.add_argument_group("model")
    group.add_argument("--train-config", default=None, choices=sorted(configs.OP_TABLES),
                       help="op table the checkpoint was trained with (default: the model's own, e.g. sdnet)")
    group.add_argument("--inference-config", default="baseline",
                       help="'baseline' runs the DCR-converted model; the training config runs the training form")
    bn = group.add_mutually_exclusive_group()
    bn.add_argument("--bn", dest="bn", action="store_const", const=True, default=None,
                    help="the checkpoint has BatchNorm in the backbone blocks (default for video models)")
    bn.add_argument("--nobn", dest="bn", action="store_const", const=False,
                    help="the checkpoint has no BatchNorm in the backbone blocks (default for image models)")
    group.add_argument("--tid", nargs="+", default=["cv", "cd", "ad"], choices=["cv", "cd", "ad"],
                       help="STDC branch ops of a video checkpoint (training default: cv cd ad)")
    group.add_argument("--nframes", type=int, default=8, help="frames per clip of a video model")
    run = parser.add_argument_group("device")
    run.add_argument("--gpu", default="", help="CUDA device(s), e.g. 0 or 0,1 (first one is used); '' = CPU")
    run.add_argument("--eager", action="store_true", help="plain eager PyTorch (no compiled fast path)")
    run.add_argument("--half", action="store_true", help="float16 inference on CUDA")


def build_inference_model(name: str, checkpoint: str | os.PathLike, *, train_config: str | None = None,
                          inference_config: str = "baseline", bn: bool | None = None,
                          tid: tuple[str, ...] = ("cv", "cd", "ad"), nframes: int = 8) -> nn.Module:
    """Model ``name`` with the weights of ``checkpoint``, in eval mode on the CPU, ready for `prepare_for_inference`.

    ``inference_config='baseline'`` returns the DCR-converted single-branch model (built with ``deploy=True``); a
    training-form checkpoint (the authors' release with its ``module.`` keys, or ours) is loaded into the training
    form and converted, an already converted checkpoint is loaded directly. ``inference_config == train_config``
    returns the training form itself. ``bn=None`` means the default of the model's kind (image: no BN, video: BN).
    Raises ``CheckpointError`` (a ValueError, one line naming the file and the missing/unexpected keys) when the
    weights do not fit, and ValueError for an unknown ``inference_config``. Forward: image models (B, 3, H, W) ->
    (B, 1, H, W); video models (B, 3T, H, W) -> (B*T, 1, H, W).
    """
    spec = configs.MODELS[name]
    train_config = train_config or spec["config"]
    if inference_config not in ("baseline", train_config):
        raise ValueError(f"--inference-config {inference_config!r}: use 'baseline' (converted) or the training config"
                         f" {train_config!r}")
    shape = {"bn": spec["kind"] == "video" if bn is None else bn, "tid": tuple(tid), "nframes": nframes}
    state_dict = load_state_dict_file(checkpoint)
    training = build_model(name, train_config, **shape)
    try:
        load_weights(training, state_dict)
    except CheckpointError as training_error:
        if inference_config != "baseline":
            raise
        # Converted checkpoints (ours, written with deploy=True) load straight into the inference architecture.
        deploy = build_model(name, train_config, deploy=True, **shape)
        try:
            load_weights(deploy, state_dict)
        except CheckpointError:
            raise training_error from None
        return deploy.eval()
    training.eval()
    if inference_config != "baseline":
        return training
    deploy = build_model(name, train_config, deploy=True, **shape)
    load_weights(deploy, convert_model(training).state_dict())
    return deploy.eval()


def saliency_to_uint8(saliency: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Sigmoid maps (N, 1, h, w) -> 8-bit maps (N, H, W) at ``size`` = (H, W), as the authors wrote them (SPEC §7.2).

    Bilinear upsampling (align_corners=False) in float32, times 255 in float32, cast to uint8 by truncation
    (no rounding, 1.0 -> 255). Runs on the maps' device; only the uint8 result is copied to the host.
    """
    maps = saliency.float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)
    return (maps[:, 0] * 255).to(torch.uint8).cpu().numpy()


def write_image_atomic(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` by the file suffix (.png, .jpg) and write it so that ``path`` is never half-written.

    ``image``: (H, W) grey, (H, W, 3) BGR or (H, W, 4) BGRA, uint8 (OpenCV channel order). Parent folders are
    created; the bytes go to a hidden temporary file in the same folder, then ``os.replace`` renames it.
    """
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(encoded.tobytes())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def fail(message: str, status: int = 2) -> NoReturn:
    """Log ``message`` as one error line (no traceback) and exit with ``status`` (2: bad usage or input)."""
    logging.getLogger(LOGGER_NAME).error(message)
    raise SystemExit(status)


def _keep(item: dict) -> dict:
    return item


class ImageFiles(torch.utils.data.Dataset):
    """Image files read (`data.readers.read_rgb`) and preprocessed (`preprocess_test`) for inference, one per item.

    Item: ``{'index', 'path', 'image': (1, 3, S, S) float32, 'size': (H, W), 'error': None}`` plus ``'rgb'``
    ((H, W, 3) uint8, for overlays) when ``keep_rgb``; a file that cannot be decoded gives ``{'index', 'path',
    'error': message}`` instead of raising, so one bad file does not stop a run. Use `inference_loader` to iterate.
    """

    def __init__(self, paths: list[Path], size: int | None, keep_rgb: bool = False) -> None:
        self.paths, self.size, self.keep_rgb = list(paths), size, keep_rgb

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            rgb = read_rgb(path)
        except DataError as err:
            return {"index": index, "path": path, "error": str(err)}
        item = {"index": index, "path": path, "image": preprocess_test(rgb, self.size)[None],
                "size": rgb.shape[:2], "error": None}
        if self.keep_rgb:
            item["rgb"] = rgb if rgb.dtype == np.uint8 else (rgb // 257).astype(np.uint8)
        return item


def inference_loader(dataset: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
    """Ordered, unbatched loader over ``dataset`` items with ``workers`` processes reading ahead (bounded memory)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       collate_fn=_keep)


def load_inference_model(args: argparse.Namespace, checkpoint: str | os.PathLike) -> nn.Module:
    """`build_inference_model` from the flags of `add_inference_args` (plus ``--model``); a checkpoint that cannot
    be loaded or does not fit ends the script with one error line and exit status 2."""
    try:
        return build_inference_model(args.model, checkpoint, train_config=args.train_config,
                                     inference_config=args.inference_config, bn=args.bn, tid=tuple(args.tid),
                                     nframes=args.nframes)
    except ValueError as err:  # CheckpointError is a ValueError
        fail(str(err))


def prepare_for_inference(model: nn.Module, device: torch.device, *, eager: bool = False,
                          half: bool = False) -> nn.Module:
    """Placeholder until the speed helper's version lands: eval mode on ``device`` (no fast path yet)."""
    return model.eval().to(device)
