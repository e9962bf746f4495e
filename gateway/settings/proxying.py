"""What the gateway relays to sandboxes: proxied HTTP, WebSockets and the firehose, and
preview ports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["ProxyingSettings"]


class ProxyingSettings(BaseModel):
    """Proxying, WebSockets, the firehose and previews."""

    # --- proxying ---------------------------------------------------------------
    proxy_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for an agent's answer (file downloads stream without one)."
    )
    proxy_connect_timeout: float = Field(5.0, gt=0)
    proxy_stall_timeout: float = Field(
        60.0, gt=0, description="Seconds a proxied answer waits for a client that reads nothing, then ends."
    )
    # The agent's HTTP parser (h11) takes a request head of at most 16 KiB: these two, plus
    # the few headers the gateway adds, stay below it, so the agent never refuses one.
    proxy_max_url_bytes: int = Field(
        8192, ge=1024, le=8192, description="Longest path and query proxied to a sandbox (longer: 414)."
    )
    proxy_max_header_bytes: int = Field(
        6144, ge=1024, le=6144, description="Most header bytes proxied to a sandbox (more: 431)."
    )
    firehose_queue_size: int = Field(10_000, ge=1, description="Frames a firehose client may lag behind.")
    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    ws_send_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of frames held for one client following a conversation; beyond, the sandbox's "
        "stream waits for it (the sandbox drops it past its own lag limits).",
    )
    ws_stall_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a following client with a full buffer may take nothing before it is closed "
        "with 4008 (too slow; it resumes with after_seq).",
    )
    firehose_queue_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes a firehose client may lag behind (it cannot slow the others): beyond, 4008.",
    )
    ws_close_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a closing WebSocket client gets to take its last frames and the close frame; "
        "a client that does not read is then left to the server.",
    )
    tcp_user_timeout: float = Field(
        120.0,
        ge=0,
        description="Seconds a client connection may leave the gateway's data unacknowledged (it stopped "
        "reading) before the kernel drops it with all it held; 0: the kernel's default.",
    )
    max_websockets_per_principal: int = Field(
        32, ge=1, description="WebSockets one principal may hold open at once; beyond: refused with 4429."
    )

    # --- preview ports (gateway.preview) ---------------------------------------
    preview_domain: str = Field(
        "",
        pattern=r"^$|^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="Host-based previews (recommended): links are {port}-{id}.<domain>; 'localhost' for "
        "local use (browsers resolve *.localhost to loopback). Empty: path-based links on the API origin. "
        "Requests for {port}-{id}.localhost are routed to previews whatever this says.",
    )
    preview_scheme: Literal["http", "https"] = Field(
        "https", description="Scheme of host-based links (not 'localhost' ones: those use the request's)."
    )
    preview_port: int | None = Field(
        None, ge=1, le=65535, description="Port in host-based links (not 'localhost' ones); unset: none."
    )
    preview_secret: str = Field(
        "",
        repr=False,
        description="HMAC key of signed preview links. Unset: a random one per gateway start (links "
        "die with it); several gateways behind one address need the same one.",
    )
    preview_link_max_ttl: int = Field(7 * 24 * 3600, ge=1, description="Longest expires_in of a link.")
