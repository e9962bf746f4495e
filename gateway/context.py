"""The gateway's parts, as the routes reach them: ``context_of(request).manager`` etc.

Built by the app's lifespan (the runtime is created asynchronously) and kept in
``app.state.gateway``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import HTTPConnection

from gateway.auth import Authenticator
from gateway.conversations import ConversationManager
from gateway.firehose import Firehose
from gateway.preview_links import PreviewLinks
from gateway.proxy import Proxy
from gateway.settings import Settings
from gateway.snapshots import SnapshotManager
from gateway.status import StatusBus


@dataclass
class GatewayContext:
    settings: Settings
    auth: Authenticator
    bus: StatusBus
    proxy: Proxy
    manager: ConversationManager
    firehose: Firehose
    links: PreviewLinks  # signed preview links (gateway.preview_links)
    # --- lifecycle: snapshots and forks ---
    snapshots: SnapshotManager


def context_of(conn: HTTPConnection) -> GatewayContext:
    return cast(GatewayContext, conn.app.state.gateway)
