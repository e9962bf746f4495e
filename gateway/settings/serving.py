"""The gateway's own serving: where it listens, who may call it (the keys), what one client
may cost it, how it logs, and where the web console finds xterm.js."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

__all__ = ["RuntimeName", "ServingSettings"]

RuntimeName = Literal["auto", "process", "docker", "swarm", "memory", "kubernetes"]


class ServingSettings(BaseModel):
    """Serving, auth, protection of the server, observability and the console."""

    # --- serving ----------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    runtime: RuntimeName = "auto"
    access_log: bool = Field(False, description="Log every request (costs throughput).")
    install: str = Field(
        "default",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
        description="Installation name: two gateways on one engine never touch each other's.",
    )

    # --- auth -------------------------------------------------------------------
    api_keys: str = Field("", description="Comma-separated principal:key pairs for users.")
    admin_keys: str = Field("", description="Comma-separated admin keys.")
    cookie_name: str = "convoy_key"

    # --- protection of the server itself ---------------------------------------
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="The gateway's own request bodies (proxied: the agent's limits)."
    )
    max_header_bytes: int = Field(64 * 1024, ge=4096, description="Request line and headers; larger: 431.")
    header_timeout: float = Field(10.0, gt=0, description="Seconds to send a request's head; slower: closed.")
    max_connections: int = Field(2048, ge=1, description="Open connections (HTTP and WebSocket); more: 503.")

    # --- observability (issue 14: metrics, usage, logs) --------------------------
    metrics_key: str = Field(
        "", description="A key that may read GET /metrics (besides admin keys); empty: admins only."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line, and one per request (convoy.access)."
    )

    # --- web console (gateway/console) ---------------------------------------------
    console_xterm_dir: str = Field(
        "/usr/share/nodejs/xterm/lib",
        description="Where xterm.js's CommonJS modules (xterm.js and what it requires) and xterm.css "
        "are installed (Debian: node-xterm); the gateway links them into one browser script. The "
        "console's terminal falls back to a plain text view when they are not there.",
    )

    @field_validator("api_keys", "admin_keys", "metrics_key")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    def user_keys(self) -> dict[str, str]:
        """``{key: principal}`` from ``api_keys``. Raises ValueError on a malformed pair."""
        keys: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in self.api_keys.split(","))):
            principal, sep, key = pair.partition(":")
            if not sep or not principal or not key:
                raise ValueError(f"CONVOY_API_KEYS entry {pair!r} is not principal:key")
            keys[key] = principal
        return keys

    def admin_key_set(self) -> frozenset[str]:
        return frozenset(filter(None, (part.strip() for part in self.admin_keys.split(","))))

    @property
    def local_mode(self) -> bool:
        """No keys configured: single local user, loopback only."""
        return not self.api_keys and not self.admin_keys
