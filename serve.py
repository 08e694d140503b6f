"""Serve saliency maps over HTTP: a page to drop a photo into, and an API for programs.

    python serve.py --checkpoint checkpoints/sdnet_from_scratch.pth        # then open http://127.0.0.1:8000/
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/saliency -o map.png

The model, input size, precision and backend are fixed at start, as predict.py takes them, and a map from the
server is byte for byte the map predict.py writes for the same file. Endpoints, limits and status codes:
engine/serving/app.py and docs/serving.md. With ``--processes N``, N processes share the port (SO_REUSEPORT),
each with its own network.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import subprocess
import sys

import torch

import configs
import utils
from data.guard import max_pixels_of
from engine.inference.loading import ModelFlags, add_model_args, model_from_flags
from engine.inference.predictor import ModelInput, Predictor
from engine.inference.runner import BackendError, RunnerFlags, add_device_args, runner_from_flags
from engine.serving.admission import BYTES_PER_PIXEL, available_memory, default_megapixels_in_flight
from engine.serving.app import ServerLimits, create_app
from engine.serving.browser import network_onnx
from engine.serving.protocol import deadlined_protocol
from engine.serving.service import MapService


def build_parser() -> argparse.ArgumentParser:
    parser = utils.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the authors' release or ours, training form or converted")
    parser.add_argument("--size", type=utils.input_size, default=None,
                        help="square network input size in pixels (default: sdnet 320, sdneta 384, video models "
                             "256)")
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    group.add_argument("--port", type=utils.int_between(0, 65535), default=8000, help="TCP port (0: any free one)")
    group.add_argument("--processes", type=utils.process_count, default=1,
                       help="server processes sharing the port, each with its own network")
    # The flag's earlier name: -j/--workers means data-reading processes in every other script.
    group.add_argument("--workers", dest="processes", type=utils.process_count, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    group.add_argument("--shared-port", action="store_true", help=argparse.SUPPRESS)  # a helper of --processes
    group.add_argument("--api-key", default=None,
                       help="key every endpoint but /health and the page's files needs (X-API-Key header, Bearer "
                            "token or ?api_key=); default: $SDNET_API_KEY, else none")
    group.add_argument("--certfile", default=None,
                       help="serve HTTPS with this certificate (PEM; browsers give the camera to secure pages only, "
                            "on any origin but localhost)")
    group.add_argument("--keyfile", default=None, help="the certificate's private key (PEM; with --certfile)")
    group = parser.add_argument_group("limits")
    group.add_argument("--max-bytes", type=utils.int_between(1, 2**30), default=20 * 2**20,
                       help="largest upload in bytes (default 20 MiB; larger: 413)")
    utils.add_max_megapixels_arg(group)
    group.add_argument("--max-megapixels-in-flight", type=utils.float_between(0.0, 1e6, low_open=True), default=None,
                       metavar="MP",
                       help="megapixels of decoded images held at once; an upload beyond waits for its turn "
                            "(default: a quarter of the memory available at start, shared by --processes, at "
                            f"{BYTES_PER_PIXEL} bytes a pixel; never under --max-megapixels)")
    group.add_argument("--upload-timeout", type=utils.float_between(0.0, 3600.0, low_open=True), default=10.0,
                       help="seconds a request's headers may take to arrive, then its upload (past either: 408); "
                            "until it has arrived, it holds no place")
    group.add_argument("--idle-timeout", type=utils.float_between(0.0, 86_400.0, low_open=True), default=60.0,
                       help="seconds a live stream (/v1/stream) may send no frame before it is closed")
    group.add_argument("--max-connections", type=utils.int_between(1, 100_000), default=1024,
                       help="open connections at most (more: 503)")
    group.add_argument("--queue", type=utils.int_between(1, 10_000), default=32,
                       help="requests served at once; more are answered 503 with Retry-After")
    group.add_argument("--timeout", type=utils.float_between(0.0, 86_400.0, low_open=True), default=30.0,
                       help="seconds a request may take (then 504)")
    group.add_argument("--decoders", type=utils.process_count, default=2,
                       help="uploads decoded and encoded at once (threads)")
    add_model_args(parser)
    add_device_args(parser)
    return parser


def listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """A bound TCP socket (``shared``: SO_REUSEPORT, for several server processes); one line and exit 2 when the
    address is taken or cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        utils.fail(f"--host {host} --port {port}: cannot listen there: {err.strerror or err}")
    sock.listen(128)
    return sock


def one_process(argv: list[str]) -> list[str]:
    """``argv`` without its process count (``--processes N``, ``--processes=N`` or the earlier ``--workers``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--processes", "--workers"):
            skip = True
        elif not arg.startswith(("--processes=", "--workers=")):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logger = utils.setup_logger()
    if args.processes > 1 and args.port == 0:
        utils.fail("--processes needs a --port: processes can share only a port given in advance")
    in_flight = args.max_megapixels_in_flight
    if in_flight is not None and in_flight < args.max_megapixels:
        utils.fail(f"--max-megapixels-in-flight {in_flight:g} is under --max-megapixels {args.max_megapixels:g}: "
                   "an image of the largest size admitted must fit")
    if bool(args.certfile) != bool(args.keyfile):
        utils.fail("--certfile and --keyfile go together: give both for HTTPS")
    if args.certfile:
        try:  # read now: a certificate uvicorn cannot load would be a traceback at its start
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as err:
            utils.fail(f"--certfile {args.certfile} / --keyfile {args.keyfile}: {err.strerror or err}")
    sock = listening_socket(args.host, args.port, shared=args.processes > 1 or args.shared_port)
    import uvicorn  # the server stack is needed by this script only

    model, description = model_from_flags(ModelFlags.from_args(args), args.checkpoint)
    model_input = ModelInput.of(description, args.size)
    size = model_input.size
    device = utils.inference_device(args.gpu, args.threads, keep_bytes=utils.SERVER_KEEP_BYTES)
    if in_flight is None:
        available = available_memory()
        in_flight = default_megapixels_in_flight(args.max_megapixels, args.processes, available)
        logger.info("images in flight: %g megapixels decoded at once (about %.1f GiB at %d bytes a pixel; a quarter "
                    "of the %s available, shared by %d process(es); --max-megapixels-in-flight sets it)", in_flight,
                    in_flight * 1e6 * BYTES_PER_PIXEL / 2**30, BYTES_PER_PIXEL,
                    "memory unknown" if available is None else f"{available / 2**30:.1f} GiB", args.processes)
    runner = runner_from_flags(model, RunnerFlags.from_args(args), device)
    if runner.precision == "int8":  # quantized and gated now: a network the gate refuses is refused at start
        try:
            runner(torch.zeros(model_input.shape()))
        except BackendError as err:
            utils.fail(str(err))
    service = MapService(Predictor(runner, model_input), max_pixels=max_pixels_of(args.max_megapixels),
                         queue_size=args.queue)
    info = {"model": description.model, "bn": description.bn, "size": size, "precision": runner.precision,
            "backend": runner.backend.name, "device": str(device), "checkpoint": os.path.basename(args.checkpoint),
            "max_bytes": args.max_bytes, "max_megapixels": args.max_megapixels,
            "max_megapixels_in_flight": in_flight, "queue": args.queue,
            "timeout": args.timeout, "upload_timeout": args.upload_timeout, "idle_timeout": args.idle_timeout,
            "max_connections": args.max_connections,
            "processes": args.processes, "version": configs.VERSION}
    # the network as the page's device mode runs it in the browser (a video model: on clips of its frames)
    onnx = network_onnx(model, size, model_input.nframes)
    info.update(in_browser=True, frames=model_input.nframes)
    limits = ServerLimits(max_bytes=args.max_bytes, max_pixels_in_flight=max_pixels_of(in_flight),
                          upload_timeout=args.upload_timeout, max_requests=args.queue,
                          timeout=args.timeout, idle_timeout=args.idle_timeout,
                          decoders=args.decoders,
                          api_key=args.api_key or os.environ.get("SDNET_API_KEY") or None)
    helpers = []
    if args.processes > 1:  # the others: the same command as one process each, on the same port
        helpers = [subprocess.Popen([sys.executable, __file__, *one_process(argv), "--shared-port"])
                   for _ in range(args.processes - 1)]
    host, port = sock.getsockname()[:2]
    logger.info("serving %s at %d px on %s://%s:%d/ (%d process(es)); the page is at /, the API at /v1/saliency",
                description.model, size, "https" if args.certfile else "http", host, port, args.processes)
    try:
        app = create_app(service, info, limits, wait_until_ready=args.processes > 1 or args.shared_port, onnx=onnx)
        # A WebSocket frame over --max-bytes is ours to refuse (a JSON error, the stream goes on), not the protocol
        # layer's (its default closes at 16 MiB): messages up to twice the cap reach the application. uvicorn's own
        # limits: --max-connections open connections (limit_concurrency: a request beyond is 503), idle keep-alive
        # connections closed after 5 s (timeout_keep_alive), WebSockets pinged every 20 s and closed when a ping
        # goes unanswered for 20 s. Its h11 protocol with a deadline on each request's headers (--upload-timeout).
        config = uvicorn.Config(app, http=deadlined_protocol(args.upload_timeout), log_level="warning",
                                access_log=False, ws_max_size=2 * args.max_bytes,
                                limit_concurrency=args.max_connections, timeout_keep_alive=5, ws_ping_interval=20.0,
                                ws_ping_timeout=20.0, ssl_certfile=args.certfile, ssl_keyfile=args.keyfile)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for helper in helpers:
            helper.terminate()
            helper.wait()


if __name__ == "__main__":
    main()
