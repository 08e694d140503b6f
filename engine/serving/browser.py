"""What the page's device mode needs to compute maps in the browser (`engine/serving/page/device.js`): the network
as ONNX at the served input size, the onnxruntime-web files it loads (the pinned npm package of package.json, served
from the page's own origin, never a CDN), and the headers that make the page cross-origin isolated, without which
the browser gives WASM one thread. `write_site` writes all of it, with the page, as a static folder.

The site's layout is the server's: the page (`PAGE_FILES`), ``ort/<file>``, ``v1/info`` (what runs, with
``"static": true``) and ``v1/model.onnx``, so the page fetches the same relative paths from either."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from data.atomic import atomic_path
from engine.inference.export import export_onnx
from models.dcr import skip_zero_pre_biases

__all__ = ["RUNTIME_DIR", "RUNTIME_FILES", "ISOLATION_HEADERS", "PAGE_DIR", "PAGE_FILES", "runtime_file", "media_type",
           "network_onnx", "write_site", "SITE_HEADERS"]

REPO = Path(__file__).resolve().parents[2]
PAGE_DIR = Path(__file__).with_name("page")
PAGE_FILES = ("index.html", "page.js", "compose.js", "device.js")
RUNTIME_DIR = REPO / "node_modules" / "onnxruntime-web" / "dist"
# The WASM build (SIMD, threads) and the WebGPU build with its WASM fallback: the entry modules and what they load.
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
                 "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
# Cross-origin isolation (SharedArrayBuffer, so WASM threads): the page and everything it loads come from one origin.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}
_MEDIA_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                ".html": "text/html; charset=utf-8", ".onnx": "application/octet-stream", "": "application/json"}
# The headers a static host must send, as a `_headers` file (Netlify, Cloudflare Pages) writes them.
SITE_HEADERS = "/*\n" + "".join(f"  {name}: {value}\n" for name, value in ISOLATION_HEADERS.items())


def runtime_file(name: str) -> Path | None:
    """The onnxruntime-web file ``name`` (one of `RUNTIME_FILES`), or None where it is not one or not installed."""
    if name not in RUNTIME_FILES or not re.fullmatch(r"[\w.-]+", name):
        return None
    path = RUNTIME_DIR / name
    return path if path.is_file() else None


def media_type(name: str) -> str:
    """The Content-Type of a file of the page or the site by its suffix."""
    return _MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")


def network_onnx(model: nn.Module, size: int, frames: int = 1) -> bytes:
    """The converted ``model`` as ONNX bytes for inputs (1, 3 ``frames``, size, size) -> (``frames``, 1, size, size)
    (an image model: one frame; a video model: its clip): the graph predict.py's onnxruntime backend runs (the
    pre-biases that are exactly zero skipped, as every backend does: the same outputs, one add of each block's input
    fewer), at one fixed shape (the browser runs one size)."""
    model = copy.deepcopy(model).eval()
    skip_zero_pre_biases(model)
    with tempfile.TemporaryDirectory(prefix="sdnet-page-") as folder:
        path = Path(folder) / "network.onnx"
        export_onnx(model, torch.zeros(1, 3 * frames, size, size), path)
        return path.read_bytes()


def write_site(out: Path, onnx: bytes, info: dict) -> list[Path]:
    """Write the static site into ``out`` (created; files replaced one by one, each written whole): the page, the
    runtime, ``v1/model.onnx``, ``v1/info`` (``info`` with ``"static": true``) and ``_headers``. Raises
    FileNotFoundError naming `npm ci` where onnxruntime-web is not installed. Returns the files written."""
    missing = [name for name in RUNTIME_FILES if runtime_file(name) is None]
    if missing:
        raise FileNotFoundError(f"onnxruntime-web is not installed ({RUNTIME_DIR / missing[0]} is missing): run "
                                "`npm ci` (make venv does)")
    files = {**{name: (PAGE_DIR / name).read_bytes() for name in PAGE_FILES},
             **{f"ort/{name}": (RUNTIME_DIR / name).read_bytes() for name in RUNTIME_FILES},
             "v1/model.onnx": onnx, "v1/info": json.dumps({**info, "static": True}, indent=1).encode(),
             "_headers": SITE_HEADERS.encode()}
    written = []
    for relative, data in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            Path(temporary).write_bytes(data)
        written.append(target)
    return written
