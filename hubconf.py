"""torch.hub entry points: ``torch.hub.load(REPO_OR_DIR, "sdnet", pretrained=True)`` gives the converted (DCR) SDNet
with the released weights, in eval mode; likewise ``sdneta``, ``stdnet`` and ``stdneta`` (video models: the DAVSOD
checkpoint unless ``dataset="VOS"`` / ``"DAVIS"``; not hashed yet: one put into ``checkpoints/`` by hand loads, a
download needs ``verify=False``).

Weights are downloaded into the ``checkpoints/`` folder beside this file (``checkpoint_dir=``) by
`engine.hub.download`, checked by SHA-256.
"""

from pathlib import Path as _Path

from engine.hub import hub_model as _hub_model

dependencies = ["torch", "numpy", "cv2"]  # what the models and checkpoint loading import
_CHECKPOINTS = _Path(__file__).absolute().parent / "checkpoints"


def _load(name: str, pretrained: bool, checkpoint_dir=None, **kwargs):
    return _hub_model(name, pretrained, checkpoint_dir=checkpoint_dir or _CHECKPOINTS, **kwargs)


def sdnet(pretrained: bool = False, **kwargs):
    """SDNet (images, 705,725 parameters): (B, 3, H, W) ImageNet-normalised -> (B, 1, H, W) saliency maps."""
    return _load("sdnet", pretrained, **kwargs)


def sdneta(pretrained: bool = False, **kwargs):
    """SDNet-A (images, MobileViTv2 blocks, 818,531 parameters): (B, 3, H, W) -> (B, 1, H, W)."""
    return _load("sdneta", pretrained, **kwargs)


def stdnet(pretrained: bool = False, **kwargs):
    """STDNet (videos, 874,469 parameters): clips (B, 3T, H, W) -> (B*T, 1, H, W)."""
    return _load("stdnet", pretrained, **kwargs)


def stdneta(pretrained: bool = False, **kwargs):
    """STDNet-A (videos, 987,275 parameters): clips (B, 3T, H, W) -> (B*T, 1, H, W)."""
    return _load("stdneta", pretrained, **kwargs)
