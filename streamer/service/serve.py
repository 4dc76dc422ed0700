"""`sam2-stream serve`: run the service with uvicorn."""

from __future__ import annotations

from typing import Any

from sam2_video import SAM2Model
from streamer.service.app import create_app, load_model, load_models
from streamer.service.drain import draining_server
from streamer.sessions.devices import DeviceSpec
from streamer.settings import Settings

__all__ = ["build_settings", "load_model", "load_models", "serve"]


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment (`SAM2_STREAM_*`), with the given non-None overrides
    (command-line flags) on top."""
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def serve(
    settings: Settings,
    *,
    model: SAM2Model | None = None,
    models: dict[DeviceSpec, SAM2Model] | None = None,
    log_level: str = "info",
) -> None:
    """Run the app until interrupted or drained (blocking). model / models: already loaded (one
    model, or one replica per device; else the app loads them). SIGTERM drains first
    (streamer.service.drain); a second one stops at once."""
    import uvicorn

    app = create_app(settings, model=model, models=models)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ws_max_size=settings.ws_max_size,
        # Our own `frame` flow has back-pressure; pings detect vanished clients.
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )
    draining_server(config, app.state.drain, exit_when_drained=settings.drain_exit).run()
