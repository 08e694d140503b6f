"""Write the page as a static site: ``python -m engine.serving.site --checkpoint CKPT --out site/``.

The folder holds the page, onnxruntime-web's files, the network as ONNX and what runs (`engine.serving.browser`):
any static host serves it, the page starts in device mode (every map computed in the visitor's browser, nothing
uploaded), and it needs no network once loaded. For WASM threads the host must send the cross-origin isolation
headers (COOP/COEP, listed in the folder's ``_headers`` file, which Netlify and Cloudflare Pages read; nginx:
docs/serving.md); a host that cannot (GitHub Pages) gets a page that runs on one thread and says why. ``--serve
PORT`` then serves the folder on 127.0.0.1 with those headers, as `python -m http.server` would without them."""

from __future__ import annotations

import argparse
import functools
import http.server
import os
from pathlib import Path

import configs
from data.atomic import unwritable
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import ModelInput
from engine.serving.browser import ISOLATION_HEADERS, network_onnx, write_site
from utils import fail, input_size, int_between, setup_logger


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.serving.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model's checkpoint (released or ours; a video model "
                                                            "runs on clips of its frames)")
    parser.add_argument("--size", type=input_size, default=None,
                        help="square network input size in pixels (default: the model's: sdnet 320, sdneta 384, "
                             "video models 256)")
    parser.add_argument("--out", default="site", help="the folder to write (default: site/)")
    parser.add_argument("--serve", type=int_between(0, 65535), default=None, metavar="PORT",
                        help="then serve the folder on http://127.0.0.1:PORT/ with its headers (0: a free port)")
    add_model_args(parser)
    return parser


class IsolatedFiles(http.server.SimpleHTTPRequestHandler):
    """The request handler of a folder's files with the cross-origin isolation headers (``directory=``), quiet:
    the static site as a host with those headers serves it."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logger = setup_logger()
    if (why := unwritable(args.out, folder=True)) is not None:
        fail(f"--out {args.out}: {why}")
    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    model_input = ModelInput.of(description, args.size)
    size = model_input.size
    info = {"model": description.model, "bn": description.bn, "size": size, "precision": "fp32",
            "backend": "onnxruntime-web", "device": "browser", "checkpoint": os.path.basename(args.checkpoint),
            "in_browser": True, "frames": model_input.nframes, "version": configs.VERSION}
    try:
        written = write_site(Path(args.out), network_onnx(model, size, model_input.nframes), info)
    except FileNotFoundError as err:
        fail(str(err))
    total = sum(path.stat().st_size for path in written)
    logger.info("wrote %d files (%.1f MB) to %s; a host serves it with the headers of its _headers file "
                "(docs/serving.md)", len(written), total / 1e6, args.out)
    if args.serve is not None:
        handler = functools.partial(IsolatedFiles, directory=args.out)
        with http.server.ThreadingHTTPServer(("127.0.0.1", args.serve), handler) as server:
            logger.info("serving %s on http://127.0.0.1:%d/ (Ctrl-C stops)", args.out, server.server_address[1])
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass


if __name__ == "__main__":
    main()
