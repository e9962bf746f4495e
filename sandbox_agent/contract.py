"""The names both sides must agree on, each written once: environment variables, headers,
WebSocket close codes and what they mean, paging bounds.

The gateway's runtimes set the agent's environment from these names, the agent
reads it with them, the proxy and the agent speak the header, and the AsyncAPI
document lists :data:`WS_CLOSE_CODES` as it is. Plain constants only (no
pydantic, no FastAPI): the client, the agent and the gateway all import this.
:mod:`sandbox_agent.protocol` re-exports every name, so wire code imports from
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "AFTER_SEQ_LIVE",
    "AGENT_ENV_PREFIX",
    "AGENT_TOKEN_ENV",
    "AGENT_TOKEN_FILE_ENV",
    "CLAIM_SECRET_HEADER",
    "CONVERSATION_ID_ENV",
    "DEFAULT_PAGE_LIMIT",
    "MAX_PAGE_LIMIT",
    "PASSIVE_HEADER",
    "RESERVED_ENV_PREFIX",
    "TASK_STREAM_MEDIA_TYPE",
    "TOKEN_HEADER",
    "WS_CLOSE_BAD_QUERY",
    "WS_CLOSE_CODES",
    "WS_CLOSE_CONVERSATION_ENDED",
    "WS_CLOSE_FORBIDDEN",
    "WS_CLOSE_GOING_AWAY",
    "WS_CLOSE_LIMIT_REACHED",
    "WS_CLOSE_NORMAL",
    "WS_CLOSE_NOT_FOUND",
    "WS_CLOSE_TOO_SLOW",
    "WS_CLOSE_UNAUTHORIZED",
    "WS_CLOSE_UPSTREAM_UNAVAILABLE",
]

# --- environment ------------------------------------------------------------------

#: Environment names starting with this belong to convoy (the gateway's settings, the
#: agent's settings): a conversation's ``env`` may not set them, and runtimes drop them
#: from what they pass on.
RESERVED_ENV_PREFIX: Final = "CONVOY_"
#: The agent reads its settings from ``AGENT_ENV_PREFIX + FIELD`` (upper case).
AGENT_ENV_PREFIX: Final = f"{RESERVED_ENV_PREFIX}AGENT_"
#: The per-conversation agent token (the agent's ``token`` setting). Never passed to a task.
AGENT_TOKEN_ENV: Final = f"{AGENT_ENV_PREFIX}TOKEN"
#: A file holding that token (the agent's ``token_file`` setting): how the runtimes deliver
#: it, so that the token is in no process's environment.
AGENT_TOKEN_FILE_ENV: Final = f"{AGENT_ENV_PREFIX}TOKEN_FILE"
#: The conversation the agent serves; the one agent setting outside its prefix.
CONVERSATION_ID_ENV: Final = f"{RESERVED_ENV_PREFIX}CONVERSATION_ID"

# --- headers ----------------------------------------------------------------------

#: Header carrying the per-conversation agent token (gateway -> agent only).
TOKEN_HEADER: Final = "X-Convoy-Token"
#: Set (to any value) on the gateway's own calls that are no use of the sandbox (the
#: firehose's event stream, the reaper's questions): the agent does not count them as
#: activity (``GET /activity``), so they never keep an idle conversation alive.
PASSIVE_HEADER: Final = "X-Convoy-Passive"

# --- media types ------------------------------------------------------------------

#: ``POST /task?wait=true`` answers JSON Lines (one ``TaskStreamRecord`` a line), as FastAPI
#: names them; the gateway streams answers of this type with no read timeout.
TASK_STREAM_MEDIA_TYPE: Final = "application/jsonl"

# --- spares (the gateway's pool, gateway/pool.py) -----------------------------------
# A spare agent (``CONVOY_AGENT_SPARE=1``, its ``spare`` setting) serves no conversation
# yet: it answers only ``GET /ready`` and ``/claim``. The claim carries this header
# with the spare's claim secret (delivered like a token: ``CONVOY_AGENT_TOKEN_FILE``), and
# hands the agent its conversation, task environment and real token in one call. The agent
# keeps the claim in ``CONVOY_AGENT_CLAIM_FILE`` (out of its tasks' reach where it starts as
# root) and reloads it when it starts again: a claimed agent never takes another claim.
# ``GET /claim`` with the same header answers what the agent is (a spare, or the claim it
# serves), claimed or not: the runtime's listing asks it rather than read the claim file.

#: Header carrying a spare's claim secret (gateway -> agent, ``/claim`` only).
CLAIM_SECRET_HEADER: Final = "X-Convoy-Claim-Secret"

# --- WebSocket close codes --------------------------------------------------------

#: A normal end: a terminal's viewer gets it after the terminal's exit frame.
WS_CLOSE_NORMAL: Final = 1000
#: The server is going away (agent or gateway shutdown); reconnect later.
WS_CLOSE_GOING_AWAY: Final = 1001
#: Bad query parameters (e.g. ``after_seq`` not an integer >= -1, a terminal ``offset`` past the end).
WS_CLOSE_BAD_QUERY: Final = 1008
#: This subscriber fell too far behind. Reconnect with ``after_seq`` set to the last
#: ``seq`` received; nothing is lost.
WS_CLOSE_TOO_SLOW: Final = 4008
#: Missing or wrong credentials.
WS_CLOSE_UNAUTHORIZED: Final = 4401
#: Not allowed (admin channel for a user; cross-origin).
WS_CLOSE_FORBIDDEN: Final = 4403
#: The conversation does not exist (or is not yours), or the terminal does not.
WS_CLOSE_NOT_FOUND: Final = 4404
#: The conversation ended (deleted, reaped or failed).
WS_CLOSE_CONVERSATION_ENDED: Final = 4410
#: ``WS /conversation/``: a conversation limit was reached (HTTP's 429).
WS_CLOSE_LIMIT_REACHED: Final = 4429
#: The sandbox could not be reached.
WS_CLOSE_UPSTREAM_UNAVAILABLE: Final = 4502

#: Every close code a client may see, with what it means (the AsyncAPI document's table).
WS_CLOSE_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        WS_CLOSE_NORMAL: "a terminal exited (after its exit frame)",
        WS_CLOSE_GOING_AWAY: "the server is stopping: reconnect later with after_seq",
        WS_CLOSE_BAD_QUERY: "bad query parameters (after_seq; a terminal's offset past its end)",
        WS_CLOSE_TOO_SLOW: "too slow (stalled with a full buffer, or too far behind): reconnect with "
        "after_seq = the last seq received; nothing is lost",
        WS_CLOSE_UNAUTHORIZED: "no or wrong API key",
        WS_CLOSE_FORBIDDEN: "not allowed (the firehose is for admins; cross-origin)",
        WS_CLOSE_NOT_FOUND: "unknown conversation, or another user's; unknown terminal",
        WS_CLOSE_CONVERSATION_ENDED: "the conversation ended: deleted, reaped, or failed",
        WS_CLOSE_LIMIT_REACHED: "a limit was reached: conversations, creates, or open WebSockets per "
        "principal (an Error frame says which)",
        WS_CLOSE_UPSTREAM_UNAVAILABLE: "the sandbox could not be reached",
    }
)

# --- paging -----------------------------------------------------------------------

#: ``after_seq`` value meaning "nothing from history; live events only".
AFTER_SEQ_LIVE: Final = -1
MAX_PAGE_LIMIT: Final = 100
DEFAULT_PAGE_LIMIT: Final = 50
