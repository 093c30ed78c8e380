"""How `alexsuite serve` runs: the one home of its defaults."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..retrieval.store import DEFAULT_INDEX
from ..settings import require, setting

LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServeSettings:
    index: str | None = setting(
        DEFAULT_INDEX,
        "Index name (kept under indexes/), a path with a /, or a Milvus collection (milvus://HOST:PORT/COLLECTION, "
        "milvus-lite:PATH.db/COLLECTION).",
    )
    detector: str | None = setting(None, "Detector directory: also serve POST /detect and the page's detect tab.")
    model: str | None = setting(None, "Default: the model recorded in the index.")
    host: str = setting("127.0.0.1", "Address to listen on. Anything but loopback needs --token or --insecure.")
    port: int = setting(8000, "TCP port.")
    token: str | None = setting(
        None, "Require this bearer token on every request (Authorization: Bearer T, or ?token=T)."
    )
    insecure: bool = setting(False, "Allow listening beyond loopback without a token.")
    max_upload_mb: float = setting(20, "Largest upload, in MB (413 beyond).")
    max_pixels: int = setting(50_000_000, "Largest uploaded image, in pixels, read from its header (400 beyond).")
    k: int = setting(10, "Results per query when a request does not say.")
    max_k: int = setting(1000, "Most results a request may ask for.")
    batch_ms: float = setting(2, "How long a query waits for others to share its forward pass, in ms.")
    max_batch: int = setting(64, "Most queries in one forward pass.")
    reload_seconds: float = setting(0.5, "How often the index is checked for new commits.")
    device: str = setting("auto", "auto, cpu or cuda[:N].")

    def check(self) -> ServeSettings:
        require(0 < self.port < 65536, f"--port {self.port}: give 1-65535")
        require(_finite_positive(self.max_upload_mb), "--max-upload-mb must be a number above 0")
        require(self.max_pixels >= 1, "--max-pixels must be 1 or more")
        require(1 <= self.k <= self.max_k, f"-k must be from 1 to {self.max_k} (the most a request may ask for)")
        require(_finite_positive(self.reload_seconds), "--reload-seconds must be a number above 0")
        require(self.batch_ms >= 0 and math.isfinite(self.batch_ms) and self.max_batch >= 1, "--batch-ms >= 0")
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise ConfigError(
                f"--host {self.host} listens beyond this machine: add --token SECRET (clients send "
                "Authorization: Bearer SECRET), or --insecure to serve anyone who can reach it"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0
