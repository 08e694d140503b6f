"""torch.hub entry points: ``torch.hub.load(REPO_OR_DIR, "sdnet", pretrained=True)`` gives the converted (DCR) SDNet
with the released weights, in eval mode; likewise ``sdneta``, ``stdnet`` and ``stdneta`` (video models: the DAVSOD
checkpoint unless ``dataset="VOS"`` / ``"DAVIS"``; not hashed yet, so they load only with ``verify=False``).

Weights are downloaded into ``checkpoints/`` (``checkpoint_dir=``) by `engine.hub.download`, checked by SHA-256.
"""

from engine.hub import hub_model

dependencies = ["torch", "torchvision", "numpy", "cv2"]


def sdnet(pretrained: bool = False, **kwargs):
    """SDNet (images, 705,725 parameters): (B, 3, H, W) ImageNet-normalised -> (B, 1, H, W) saliency maps."""
    return hub_model("sdnet", pretrained, **kwargs)


def sdneta(pretrained: bool = False, **kwargs):
    """SDNet-A (images, MobileViTv2 blocks, 818,531 parameters): (B, 3, H, W) -> (B, 1, H, W)."""
    return hub_model("sdneta", pretrained, **kwargs)


def stdnet(pretrained: bool = False, **kwargs):
    """STDNet (videos, 874,469 parameters): clips (B, 3T, H, W) -> (B*T, 1, H, W)."""
    return hub_model("stdnet", pretrained, **kwargs)


def stdneta(pretrained: bool = False, **kwargs):
    """STDNet-A (videos, 987,275 parameters): clips (B, 3T, H, W) -> (B*T, 1, H, W)."""
    return hub_model("stdneta", pretrained, **kwargs)
