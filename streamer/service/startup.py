"""The one INFO line `serve` logs when it is ready: what it runs, where, and its URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamer.settings import Settings

if TYPE_CHECKING:
    import torch

    from streamer.sessions import SessionManager


def service_url(settings: Settings) -> str:
    """The base URL clients use (https with --tls-cert; 0.0.0.0 shown as the host's name)."""
    scheme = "https" if settings.tls_cert is not None else "http"
    host = settings.host
    if host in ("0.0.0.0", "::"):
        import socket

        host = socket.gethostname()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.port}/"


def startup_line(settings: Settings, manager: SessionManager) -> str:
    """E.g. "ready: model sam2.1_hiera_t (checkpoint checkpoints/sam2.1_hiera_tiny.pt) on
    cuda:0, cuda:1, float32, compiled: no, at http://127.0.0.1:8000/"."""
    schedulers = manager.schedulers
    dtypes = sorted({str(_dtype(s.model)) for s in schedulers.values()})
    checkpoint = settings.checkpoint if settings.checkpoint is not None else "the default"
    compiled = "yes (vos_optimized)" if settings.vos_optimized else "no"
    return (
        f"ready: model {settings.model} (checkpoint {checkpoint}) on {', '.join(schedulers)}, "
        f"{'/'.join(d.removeprefix('torch.') for d in dtypes)}, compiled: {compiled}, "
        f"at {service_url(settings)}"
    )


def _dtype(model: torch.nn.Module) -> object:
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else "?"
