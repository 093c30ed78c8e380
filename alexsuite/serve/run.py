"""Running the service under uvicorn until Ctrl-C."""

from __future__ import annotations

import socket

from ..errors import ConfigError
from .app import create_app
from .server import Service
from .settings import ServeSettings


def serve(settings: ServeSettings, say=print) -> None:
    import uvicorn

    _check_port(settings.host, settings.port)
    service = Service(settings, warn=lambda m: say(f"warning: {m}")).start()
    try:
        stats = service.stats()
        say(
            f"serving {stats['images']:,} images of {stats['index']} at http://{_url_host(settings.host)}:{settings.port}/"
        )
        config = uvicorn.Config(
            create_app(service, settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run()
    finally:
        service.stop()


def _check_port(host: str, port: int) -> None:
    """A taken port is one line before the model loads, not uvicorn's log after it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"--host {host} --port {port}: cannot listen there ({e.strerror}); choose another --port"
            ) from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
