"""`sam2-stream serve`: the live tracking service (logic in streamer/service/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamer.cli.common import (
    DEFAULT_MODEL,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    add_precision_option,
    report_error,
)


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    """Add the `serve` command and its options to `commands`."""
    parser = commands.add_parser(
        "serve",
        help="run the live tracking service (HTTP + websocket)",
        description="Serve SAM 2 video tracking over HTTP and websockets. Flags override the "
        "SAM2_STREAM_* environment variables (see streamer/settings.py).",
    )
    parser.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: 8000)")
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="PEM",
        help="serve HTTPS with this certificate (with --tls-key); browsers on other machines "
        "need HTTPS for the camera. Self-signed for a LAN: docs/https.md",
    )
    parser.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="its key")
    parser.add_argument("--model", default=None, help=f"config name (default: {DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PATH")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument(
        "--detector",
        default=None,
        metavar="MODEL",
        help="detector for the `detect` command and session option: a YOLO .pt (Ultralytics, "
        "AGPL-3.0 extra), a transformers model id or folder, or package.module:function",
    )
    parser.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="serve on several devices, one scheduler and model replica each, e.g. "
        "cuda:0,cuda:1 or cpu,cpu (default: --device, else every visible GPU, else cpu)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="sessions whose frames share one batched step at most (default: per device type)",
    )
    parser.add_argument(
        "--vos-optimized",
        action="store_true",
        default=None,
        help="compile the video path with torch.compile (the official vos_optimized mode)",
    )
    add_precision_option(parser, default=None)
    parser.add_argument(
        "--download",
        action="store_true",
        help="download the model's official checkpoint first if it is missing (only that one)",
    )
    parser.set_defaults(handler=_run_serve)


def check_tls_files(cert: Path | None, key: Path | None) -> None:
    """Both or neither, and readable PEM files; raises ValueError saying what is wrong (before
    the model is loaded)."""
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag}: no file {path}")
    if cert is not None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot use {cert} / {key} for HTTPS: {exc}") from exc


def _run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sam2_video.build import CheckpointError, check_model
    from sam2_video.checkpoints import CheckpointDownloadError, ensure_checkpoint
    from sam2_video.config import ConfigError
    from streamer.service import serve

    try:
        settings = serve.build_settings(
            host=args.host,
            port=args.port,
            model=args.model
            if args.model is not None or args.checkpoint is None
            else str(args.checkpoint),
            checkpoint=args.checkpoint,
            device=args.device,
            detector=args.detector,
            devices=None if args.devices is None else [d for d in args.devices.split(",") if d],
            max_batch=args.max_batch,
            vos_optimized=args.vos_optimized,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            precision=args.precision,
        )
        check_tls_files(settings.tls_cert, settings.tls_key)
    except (ValidationError, ValueError) as exc:
        report_error("serve", exc)
        return EXIT_BAD_INPUT
    # Load before starting the server so a bad model, checkpoint or device is a clean usage
    # error; the model name first, so that a typo says "unknown model", not "no checkpoint".
    try:
        check_model(settings.model)
        if args.download:
            ensure_checkpoint(str(settings.model), settings.checkpoint, download=True)
        models = serve.load_models(settings)
    except CheckpointDownloadError as exc:
        report_error("serve", exc)
        return EXIT_FAILURE
    except (ConfigError, CheckpointError, OSError, RuntimeError, ValueError) as exc:
        report_error("serve", exc)
        return EXIT_BAD_INPUT
    level = "debug" if args.verbose > 1 else "info"
    serve.serve(settings, models=models, log_level=level)
    return EXIT_OK
