"""``convoy-agent`` / ``python -m sandbox_agent``: run one conversation's agent under uvicorn.

    convoy-agent --host H --port P --workspace DIR --state-dir DIR
    convoy-agent --uds PATH ...      (a Unix socket instead of TCP: a sandbox with no network)
                 [--token-file FILE] [--handed-token FILE] [--run-as UID:GID] [--unprotected]
                 [--spare] [--claim-file FILE]
                 [--template NAME] [--task-python PYTHON]

The token comes from ``--token-file`` (``CONVOY_AGENT_TOKEN_FILE``), else
``CONVOY_AGENT_TOKEN``; either way that variable is removed from the agent's
environment (its tasks inherit the rest). ``--handed-token``: a file the runtime put the
token in for this start (faster than writing it through the engine); its token is kept in
``--token-file`` and the file removed, before anything else is read. Without a token the agent refuses
to start (exit 2) unless ``--unprotected`` or ``CONVOY_AGENT_UNPROTECTED=1``.
``--run-as``: started as root, the agent reads the token, then works as that
user and runs its tasks as it (see :mod:`sandbox_agent.privileges`).
``--spare``: start with no conversation and wait for a claim (the token is then
the claim secret); ``--claim-file``: where a claim is kept, read (as root, before
the switch) at every start (see :mod:`sandbox_agent.claim`).
The conversation id comes from ``CONVOY_CONVERSATION_ID``. SIGTERM/SIGINT end
it gracefully: running tasks are cancelled (their process groups ended), the
event log is written and fsynced, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox_agent.claim import Claim
    from sandbox_agent.settings import AgentSettings

from sandbox_agent.contract import AGENT_TOKEN_ENV


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convoy-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--uds", type=Path, help="listen on this Unix socket instead of --host/--port (made before --run-as)"
    )
    parser.add_argument("--workspace", type=Path, help="workspace root (default: CONVOY_AGENT_WORKSPACE)")
    parser.add_argument(
        "--state-dir", type=Path, help="event log directory (default: CONVOY_AGENT_STATE_DIR)"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the token (CONVOY_AGENT_TOKEN_FILE)")
    parser.add_argument(
        "--handed-token", type=Path, help="a token handed over here: kept in --token-file, this removed"
    )
    parser.add_argument("--run-as", help="UID:GID to work and run tasks as, when started as root")
    parser.add_argument("--unprotected", action="store_true", help="serve without a token (development only)")
    parser.add_argument("--spare", action="store_true", help="no conversation until claimed (POST /claim)")
    parser.add_argument("--claim-file", type=Path, help="where the claim is kept (CONVOY_AGENT_CLAIM_FILE)")
    parser.add_argument("--template", help="the template this sandbox runs (named by agent-info)")
    parser.add_argument("--task-python", help="interpreter of Python tasks (default: the agent's own)")
    parser.add_argument("--log-level", default="warning")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _without_pydantic_v1()
    from pydantic import ValidationError

    from sandbox_agent.settings import AgentSettings

    overrides: dict[str, object] = {}
    if args.workspace is not None:
        overrides["workspace"] = args.workspace
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir
    if args.unprotected:
        overrides["unprotected"] = True
    if args.token_file is not None:
        overrides["token_file"] = args.token_file
    if args.run_as is not None:
        overrides["run_as"] = args.run_as
    if args.spare:
        overrides["spare"] = True
    if args.claim_file is not None:
        overrides["claim_file"] = args.claim_file
    if args.template is not None:
        overrides["template"] = args.template
    if args.task_python is not None:
        overrides["task_python"] = args.task_python
    try:
        settings = AgentSettings(**overrides)
    except ValidationError as error:
        print(f"convoy-agent: bad settings:\n{error}", file=sys.stderr)
        return 2
    for name in [name for name in os.environ if name.upper() == AGENT_TOKEN_ENV]:
        del os.environ[name]  # tasks inherit the agent's environment; the token is not theirs
    try:
        listening = _unix_socket(args.uds) if args.uds is not None else None
        kept_claim = _take_token_and_drop(settings, args.handed_token)
    except (OSError, ValueError) as error:
        print(f"convoy-agent: {error}", file=sys.stderr)
        return 2
    pool_secret = settings.token if settings.spare and kept_claim is not None else None
    if kept_claim is not None:
        settings.token = kept_claim.token  # the claimed conversation's, not the spare's secret
    if not settings.token and not settings.unprotected:
        print(
            "convoy-agent: refusing to start without a token (--token-file or CONVOY_AGENT_TOKEN) "
            "(pass --unprotected or set CONVOY_AGENT_UNPROTECTED=1 to serve without one)",
            file=sys.stderr,
        )
        return 2
    if settings.token and settings.unprotected:
        settings.unprotected = False  # a configured token always applies

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from sandbox_agent import lean

    config_class, server_class = lean.uvicorn_server()
    from sandbox_agent.app import create_app
    from sandbox_agent.coalesce import CoalescingH11Protocol
    from sandbox_agent.runnables.process import use_pidfd_exits

    use_pidfd_exits()  # this process runs one event loop for its whole life
    app = create_app(settings, kept_claim, pool_secret)
    config = config_class(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        ws_max_size=settings.max_event_bytes,
        # events are small JSON on a local link: compressing each costs more than it saves
        ws_per_message_deflate=False,
        # uvloop and httptools (the gateway's) would add ~3 MB to every sandbox's memory
        loop="asyncio",
        # h11, each loop turn's writes sent as one (a streamed task: 2-3 packets, not 6)
        http=CoalescingH11Protocol,
        timeout_graceful_shutdown=int(settings.kill_grace_seconds) + 5,
        lifespan="on",
    )
    server = _graceful_server(server_class, config, on_exit=app.state.agent.stopping.set)
    server.run(sockets=[listening] if listening is not None else None)
    # uvicorn handles SIGTERM/SIGINT: stops accepting, runs the lifespan shutdown
    # (tasks cancelled, log flushed) and returns; a failed start-up leaves started False.
    return 0 if server.started else 1


def _unix_socket(path: Path) -> socket.socket:
    """The agent's Unix socket at ``path``, bound now, by whoever the agent starts as.

    Made before :func:`_take_token_and_drop`: started as root (as the runtimes do), the socket
    is root's, so the sandbox user the tasks run as can neither unlink nor replace it (nor chmod
    it), even where the directory is writable. Anyone may connect (0o666): who reaches the
    directory is the runtime's to decide (the Docker runtime mounts it into this sandbox only).
    A socket left by an earlier run is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(str(path))
        path.chmod(0o666)
    except OSError:
        listening.close()
        raise
    return listening


def _take_token_and_drop(settings: AgentSettings, handed: Path | None = None) -> Claim | None:
    """Read the token file (first keeping there a token ``handed`` over, if any) and the claim
    kept, if any (while still root, where the runtime starts the agent as root), then switch
    to ``run_as``; all are read before, never after."""
    from sandbox_agent import privileges
    from sandbox_agent.claim import read_claim

    if settings.token_file is not None:
        if handed is not None:
            privileges.keep_handed_token(handed, settings.token_file)
        settings.token = privileges.read_token(settings.token_file)
    kept = read_claim(settings.claim_file)
    if settings.run_as is not None:
        privileges.drop_to(*privileges.parse_user(settings.run_as))
    return kept


def _without_pydantic_v1() -> None:
    """Make ``pydantic.v1`` unimportable in this process (the agent's own, never its tasks').

    FastAPI imports all of ``pydantic.v1`` (1.5 MB of resident memory, for the life of
    the sandbox) only to check that no route uses a v1 model, and answers "none" when
    the import fails. Nothing in the agent uses v1 models.
    """
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]


def _graceful_server(server_class: Any, config: Any, on_exit: Callable[[], object]) -> Any:
    """A uvicorn server that exits 0 after a graceful SIGTERM/SIGINT shutdown, calling
    ``on_exit`` on its event loop as soon as the signal arrives.

    Plain uvicorn re-raises the signal once it has shut down, so the process
    would end "killed by SIGTERM"; a clean shutdown is a success for the agent.
    """

    class GracefulServer(server_class):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()
            with contextlib.suppress(RuntimeError):  # no loop running: nothing is streaming
                asyncio.get_running_loop().call_soon_threadsafe(on_exit)

    return GracefulServer(config)


if __name__ == "__main__":
    sys.exit(main())
