"""The released checkpoints in one line: downloads verified by SHA-256, and the models ``hubconf.py`` serves.

    python -m engine.hub list
    python -m engine.hub download sdnet_from_scratch sdneta_from_pretrained      # into checkpoints/
    python -m engine.hub download stdnet_from_scratch_DAVSOD --no-verify          # video files: not hashed yet

The files come from ``<base URL>/<name>.pth``; the base URL is ``--base-url``, else the environment variable
``SDNET_CHECKPOINT_URL``, else `DEFAULT_BASE_URL` (the ``checkpoints/`` folder of the authors' GitHub repository;
it cannot be checked from the machine this was written on). A file is streamed into a temporary name beside its
target while its SHA-256 is computed, and renamed only when the hash matches the one recorded here; a mismatched or
truncated download is refused with a one-line error and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch

import configs
from data.atomic import atomic_path, unwritable
from models import build_model, load_model
from utils import fail, setup_logger

__all__ = ["DEFAULT_BASE_URL", "RELEASED", "HubError", "download", "hub_model"]

REPO = Path(__file__).resolve().parents[1]
BASE_URL_VARIABLE = "SDNET_CHECKPOINT_URL"
DEFAULT_BASE_URL = "https://github.com/hellozhuo/sdnet/raw/main/checkpoints"
# SHA-256 of the released files, computed from the authors' files; None: not hashed yet (downloads only unverified).
RELEASED: dict[str, str | None] = {
    "sdnet_from_scratch": "1be3d679e894ac7e5255ebe9f181d4f18e8a5e58627de1aec109f5cad7a1671b",
    "sdneta_from_pretrained": "fab5d3e8744a203a329ada6750e408430c2bb173da79bdf64b2d9ec313ba65d9",
    "sdnet_stage1_backbone": "d29f53f575a2e3ea3e2d3a9355686f4c83647284cbcc7152a3585827c6e5c850",
    "sdneta_imagenet_pretrained_backbone": "9d60c64148c9369c83058bb50083876815ddb2e06317eaf326333354baf1dcf0",
    **{f"{model}_{dataset}": None for model in ("stdnet_from_scratch", "stdneta_from_pretrained")
       for dataset in ("DAVSOD", "VOS", "DAVIS")},
}
# The checkpoint torch.hub's pretrained=True loads for each model (video models: the DAVSOD one unless told).
HUB_CHECKPOINTS = {"sdnet": "sdnet_from_scratch", "sdneta": "sdneta_from_pretrained",
                   "stdnet": "stdnet_from_scratch_{dataset}", "stdneta": "stdneta_from_pretrained_{dataset}"}


class HubError(RuntimeError):
    """A download that cannot be done or verified; the message is one line."""


def download(name: str, out: str | os.PathLike = REPO / "checkpoints", base_url: str | None = None,
             verify: bool = True) -> Path:
    """Fetch ``<base_url>/<name>.pth`` into ``out`` and return its path (an existing file that verifies is kept).
    Raises `HubError` for an unknown name, an unhashed file with ``verify``, a failed, truncated or mismatched
    download (saying where to get the file by hand)."""
    if name not in RELEASED:
        raise HubError(f"unknown checkpoint {name!r}; released: {', '.join(RELEASED)}")
    expected = RELEASED[name]
    if verify and expected is None:
        raise HubError(f"{name} has no recorded SHA-256 yet: download it with --no-verify (verify=False) to accept "
                       "it unverified")
    base_url = (base_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL).rstrip("/")
    url, target = f"{base_url}/{name}.pth", Path(out) / f"{name}.pth"
    if target.is_file() and (not verify or _sha256(target) == expected):
        return target
    by_hand = f"download {url} by hand into {target}"
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as temporary, urllib.request.urlopen(url, timeout=60) as response, \
                open(temporary, "wb") as handle:
            announced, received = int(response.headers.get("Content-Length", -1)), 0
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                handle.write(chunk)
                received += len(chunk)
            if 0 <= announced != received:
                raise http.client.IncompleteRead(b"", announced - received)
            if verify and digest.hexdigest() != expected:
                raise HubError(f"{url}: SHA-256 {digest.hexdigest()} differs from the recorded {expected} (corrupt "
                               f"or changed file); nothing written; {by_hand} and check it")
    except urllib.error.HTTPError as err:
        raise HubError(f"{url}: HTTP {err.code} {err.reason}; {by_hand}") from None
    except (urllib.error.URLError, OSError) as err:
        raise HubError(f"{url}: {getattr(err, 'reason', err)}; {by_hand}") from None
    except http.client.IncompleteRead as err:
        raise HubError(f"{url}: download cut short, {err.expected} bytes missing (truncated); nothing written; "
                       f"{by_hand}") from None
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def hub_model(name: str, pretrained: bool = False, checkpoint_dir: str | os.PathLike | None = None,
              dataset: str = "DAVSOD", verify: bool = True, base_url: str | None = None) -> torch.nn.Module:
    """The converted (DCR) model ``name`` in eval mode: with ``pretrained`` the released weights (downloaded into
    ``checkpoint_dir``, default checkpoints/, if missing; video models the ``dataset`` file, which is not hashed
    yet: one put there by hand loads, a download needs ``verify=False``), else random weights. Image models
    (B, 3, H, W) -> (B, 1, H, W); video models (B, 3T, H, W) -> (B*T, 1, H, W). Raises `HubError` (one line)
    when the weights are neither there nor downloadable."""
    if name not in configs.MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(configs.MODELS)}")
    if not pretrained:
        return build_model(name, deploy=True).eval()
    file = HUB_CHECKPOINTS[name].format(dataset=dataset)
    local = Path(checkpoint_dir or REPO / "checkpoints") / f"{file}.pth"
    if verify and RELEASED.get(file, "") is None:  # not hashed: nothing to check a download against
        if not local.is_file():
            raise HubError(f"{name}, pretrained=True: {local} is not there. The authors' video checkpoints have no "
                           f"recorded SHA-256 yet, so they are not downloaded unchecked: put {file}.pth there by "
                           "hand, or pass verify=False to download it unchecked")
        return load_model(local, model=name)[0]
    return load_model(download(file, local.parent, base_url, verify), model=name)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the released checkpoints and whether they are hashed")
    fetch = commands.add_parser("download", help="download released checkpoints into checkpoints/")
    fetch.add_argument("names", nargs="+", choices=sorted(RELEASED), metavar="NAME")
    fetch.add_argument("--out", default=str(REPO / "checkpoints"), help="target folder (default: checkpoints/)")
    fetch.add_argument("--base-url", default=None,
                       help=f"where the files are (default: ${BASE_URL_VARIABLE}, else {DEFAULT_BASE_URL})")
    fetch.add_argument("--no-verify", dest="verify", action="store_false",
                       help="accept files without a recorded SHA-256 (the video checkpoints) unverified")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = setup_logger()
    if args.command == "list":
        for name, digest in RELEASED.items():
            logger.info("%-40s %s", name, digest or "not hashed yet (--no-verify)")
        return
    if (why := unwritable(args.out, folder=True)) is not None:
        fail(f"--out {args.out}: {why}")
    for name in args.names:
        try:
            path = download(name, args.out, args.base_url, args.verify)
        except HubError as err:
            fail(str(err))
        logger.info("%s: %s%s", name, path, "" if args.verify else " (not verified)")


if __name__ == "__main__":
    main()
