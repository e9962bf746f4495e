"""The Runtime seam: how a sandbox is started, found and removed, and what it says of one.

Nothing above this module knows which runtime is underneath. A runtime keeps
the metadata of every sandbox it started (the :class:`SandboxSpec` minus
nothing) itself - container labels, a metadata file, its own memory for the
in-memory runtime - so that a gateway killed and started again rebuilds its
whole view from :meth:`Runtime.list`.

The state contract (what :meth:`Runtime.find` and :meth:`Runtime.list` say of
one sandbox; like JupyterHub's ``Spawner.poll``: ``None`` while running, an
exit status once ended, and no answer at all for what is not there)::

                 start()                  agent answers /ready
    (absent) ----------------> STARTING -----------------------> RUNNING
       ^                          |                                 |
       |  remove() / start fails  |    process/container ends       |
       +--------------------------+---------------------------------+--> EXITED
       |                                                                  |
       +-------------- remove(), cleanup_orphans() -----------------------+

- *absent*: ``find`` answers ``None`` and ``list`` leaves it out: never
  started, removed, a start that failed (nothing is left of it), or vanished
  (removed behind this runtime's back, by another gateway or by hand). A runtime
  that follows its backend's watch rather than asking it on every call
  (kubernetes) shows a vanished sandbox absent once the watch has told it: a
  moment after the removal, not necessarily by the time another instance's
  :meth:`Runtime.remove` returns (a gateway's next sync round then ends its conversation).
- STARTING: :meth:`Runtime.start` is under way (here or in another gateway of
  the installation) and the agent is not known to answer yet. A runtime may go
  to RUNNING as soon as the sandbox's process runs (Docker does, from
  ``docker start`` on); a runtime may also not list a start whose metadata it
  has not written yet (the process runtime, for a few milliseconds).
- RUNNING: the process or container runs. Once :meth:`Runtime.start` has
  returned, its agent answers at ``base_url`` with the spec's token.
- EXITED: the process or container ended without being removed. ``reason``
  is always set, in words (the last log lines where the runtime has them);
  ``exit_code`` where the runtime can know it (``None`` for the process
  runtime, whose agents are not its children); ``oom_killed`` when the kernel
  killed it for memory. An EXITED sandbox stays listed until removed.

Pausing (the lifecycle block of the protocol)::

                 pause()                      resume()
    RUNNING ----------------> PAUSED ----------------> RUNNING
                                |
                                +-- remove(), or the sandbox ends --> (absent) / EXITED

- PAUSED: the sandbox is frozen (Docker: the cgroup freezer; process: SIGSTOP
  to the agent's and its tasks' process groups; swarm: the agent's ``POST
  /freeze``, SIGSTOP to every process it started; memory: recorded only, the
  in-process agent keeps running), its memory and workspace kept. Its agent
  does not answer until :meth:`Runtime.resume` (swarm, memory: it answers, its
  tasks make no progress); a connection opened meanwhile waits. A runtime that
  cannot pause at all says so with a class attribute ``pauses = False`` (absent:
  it can): the gateway then refuses before it records anything. The state is
  the runtime's (the engine's, the metadata file, swarm: a config), so a
  restarted gateway finds it PAUSED in :meth:`Runtime.list`. :meth:`Runtime.remove`
  removes a PAUSED sandbox like any other; :meth:`Runtime.cleanup_orphans`
  leaves it alone like a RUNNING one.

Snapshots (the snapshot block): a saved copy of one sandbox's workspace with
its :class:`SnapshotInfo`, kept by the runtime (a labelled volume, a folder with
a metadata file, a tar archive with one) apart from every sandbox: it outlives the sandbox it was taken
of and the gateway, and only :meth:`Runtime.remove_snapshot` removes it (never
:meth:`Runtime.remove` or :meth:`Runtime.cleanup_orphans`). A spec with a
:class:`WorkspaceSeed` starts with the workspace of a snapshot, or of another
sandbox at that moment (a fork: files only, no process, no event log).

Every handle carries the full spec (owner, title, token, idle timeout, ...)
and ``base_url``, in every state.

What :meth:`gateway.reconciling.Reconciler.reconcile` (and ``sync``, every few seconds)
relies on: ``list`` returns every sandbox of the installation with its spec (one without
a record is adopted as READY once RUNNING, a PAUSED one as PAUSED; a STARTING one is
left to its start, here or in another gateway); an EXITED one
is removed and its READY conversation fails with ``reason`` (one that crashed, by
``oom_killed`` or a failing ``exit_code``, fails at once and is left to
:meth:`Runtime.cleanup_orphans`, so every gateway sees it fail); a READY
conversation whose sandbox is absent from ``list`` ends (removed by another
gateway of the installation, or by hand); conversations it is starting or stopping itself are left to
:meth:`Runtime.start` and :meth:`Runtime.remove`; :meth:`Runtime.cleanup_orphans`
comes last and never touches a start under way in this runtime, nor, within its
min-age guard, one under way in another runtime instance of the installation
(another gateway). ``find`` answers for any sandbox of the installation, whoever
started it: a gateway asks it for an id it holds no record of before a 404. A ``list``
that raises (:class:`RuntimeUnavailable`) changes nothing: an engine that does
not answer is no exit. ``tests/gateway/runtimes/test_contract.py`` checks these
transitions on every runtime, ``test_docker_sandboxes.py`` the engine's absence.

Spares (the pool, :mod:`gateway.pool`): a spec with ``pool`` set starts a
*spare*: an agent with no conversation yet, whose ``token`` is its claim secret
(it answers only ``/ready`` and ``POST /claim``). It is listed and found like
any sandbox, in the same states, with ``spec.pool`` set; :meth:`Runtime.claim`
hands it to a conversation in one call, after which ``find`` and ``list`` give
the conversation's spec (``pool`` unset) - also in another gateway, and after a
restart: the agent keeps the claim (``sandbox_agent.claim``) and the runtime
reads it back. The spare's conversation id is chosen when it is made (and
shown to nobody until claimed), so its names and labels never change.

Errors: every runtime raises only :class:`~gateway.errors.RuntimeFailure`
subclasses (re-exported here); foreign errors (aiodocker, OSError, httpx) are
mapped once, at the runtime's boundary.
"""

from __future__ import annotations

import builtins
from typing import Protocol
from uuid import UUID

from gateway.errors import (
    ClaimFailed,
    InvalidTemplate,
    RuntimeFailure,
    RuntimeUnavailable,
    SandboxStartError,
    SpareTaken,
    TemplateBuildError,
    TemplateInUse,
    TemplateNotFound,
    TemplatesUnsupported,
)
from gateway.runtimes.readiness import wait_until_ready
from gateway.runtimes.sandbox import (
    ProgressCallback,
    ResourceLimits,
    ResourceUsage,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    SnapshotInfo,
    WorkspaceSeed,
)
from gateway.runtimes.templates import DEFAULT_TEMPLATE, Template, TemplateSource, check_template_name

# The seam's public surface: the protocol, and (re-exported, one definition each) the values
# it speaks of (gateway.runtimes.sandbox, .templates), its errors and its readiness wait.
__all__ = [
    "DEFAULT_TEMPLATE",
    "ClaimFailed",
    "InvalidTemplate",
    "ProgressCallback",
    "ResourceLimits",
    "ResourceUsage",
    "Runtime",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "SandboxHandle",
    "SandboxSpec",
    "SandboxStartError",
    "SandboxState",
    "SnapshotInfo",
    "SpareTaken",
    "Template",
    "TemplateBuildError",
    "TemplateInUse",
    "TemplateNotFound",
    "TemplateSource",
    "TemplatesUnsupported",
    "WorkspaceSeed",
    "check_template_name",
    "wait_until_ready",
]


class Runtime(Protocol):
    """Starts, finds, lists and removes sandboxes. One instance per gateway; several
    instances (gateways) may share one installation. See the state contract above."""

    name: str
    #: Whether :attr:`SandboxSpec.egress` is enforced; the gateway refuses an allow-list otherwise.
    enforces_egress: bool

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        """Start a sandbox for ``spec`` and return its RUNNING handle once its agent
        answers ``/ready``; from then on ``find`` returns a handle with the same spec
        and ``base_url``. Meanwhile the sandbox is absent, STARTING or RUNNING.

        Calls ``progress`` with each phase. Raises :class:`SandboxStartError`
        when the agent does not get ready within the runtime's start timeout (or
        its process ends first), and :class:`RuntimeUnavailable` when the backend
        cannot be reached. On any failure, and when cancelled, whatever it created
        is removed before it raises: the sandbox is absent.
        """
        ...

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        """The sandbox of ``conversation_id`` in its current state (STARTING, RUNNING
        or EXITED), or ``None`` when it is absent."""
        ...

    async def list(self) -> list[SandboxHandle]:
        """Every sandbox of this installation that is not absent, in any state, with
        its metadata; in no particular order."""
        ...

    async def remove(self, conversation_id: UUID) -> bool:
        """Stop the sandbox (with a grace period) and remove it and all it owns
        (volume, network, workspace, state), in any state. Afterwards it can no longer
        run and this runtime's :meth:`find` and :meth:`list` no longer show it; a runtime
        may finish removing what it owns in the background (Docker does), and then
        :meth:`close` waits for that, and should the process die first, the next
        :meth:`cleanup_orphans` of the installation removes what is left.
        Returns ``True`` when something was removed, ``False`` when there was
        nothing to remove. Idempotent."""
        ...

    async def cleanup_orphans(self) -> int:
        """Remove what this installation left behind: EXITED sandboxes (call
        :meth:`list` first to learn why they ended) and what no sandbox owns any
        more (volumes, networks, relays, folders). Leaves RUNNING sandboxes and the
        starts under way in this runtime alone. Returns how many sandboxes and
        left-over objects were removed."""
        ...

    # --- usage (issue 14) ------------------------------------------------------------

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """What the RUNNING sandbox of ``conversation_id`` uses now; ``None`` when it is
        absent. Never blocks the event loop (file walks and ``/proc`` reads run in
        threads, bounded); raises :class:`RuntimeUnavailable` when the backend does not
        answer."""
        ...

    # --- end of usage ------------------------------------------------------------------

    # --- lifecycle: pause and resume (see "Pausing" above) -------------------------

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        """Freeze a RUNNING sandbox: afterwards it is PAUSED (a PAUSED one stays so).
        Raises :class:`~gateway.errors.EngineNotFound` when it is absent, and
        :class:`RuntimeFailure` when it is in another state."""
        ...

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        """Thaw a PAUSED sandbox: afterwards it is RUNNING and its agent answers again
        (a RUNNING one stays so). Raises as :meth:`pause` does."""
        ...

    # --- snapshots (see "Snapshots" above) --------------------------------------------

    async def snapshot(self, conversation_id: UUID, info: SnapshotInfo) -> SnapshotInfo:
        """Copy the workspace of the (RUNNING or PAUSED) sandbox of ``conversation_id``
        as it is at one moment (a RUNNING one is frozen while it is copied, where the
        runtime can freeze) into a new snapshot ``info.id``, and return ``info`` with
        its ``size``. Nothing is left of a snapshot that fails."""
        ...

    async def snapshots(self) -> builtins.list[SnapshotInfo]:
        """Every snapshot of this installation, in no particular order."""
        ...

    async def remove_snapshot(self, snapshot_id: UUID) -> bool:
        """Remove one snapshot; ``False`` when there was none. Idempotent."""
        ...

    # --- the pool: claiming a spare (gateway/pool.py) ------------------------------------

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """Hand the RUNNING spare ``spare`` to the conversation ``spec`` (the spare's
        conversation id, ``pool`` unset) in one call to its agent, which records READY
        as event 1 and from then on wants ``spec.token``. Returns the RUNNING handle
        with ``spec`` (limits, internet and egress: the spare's); ``find`` and ``list``
        answer the same from then on. Raises :class:`SpareTaken` when the agent was
        claimed already, :class:`ClaimFailed` when it cannot be claimed (gone, not
        answering): the caller removes it."""
        ...

    async def close(self) -> None:
        """Release the runtime's own resources; sandboxes keep running (but the memory
        runtime's, which cannot outlive the process: it stops them, EXITED)."""
        ...

    # --- templates (issue 12): named images a sandbox can run -----------------------
    # A template is what a sandbox runs: DEFAULT_TEMPLATE, always there (the runtime's
    # own sandbox, e.g. the convoy-sandbox image), and the ones built with
    # build_template (on docker: local images carrying convoy's labels, into which the
    # agent is mounted; see gateway.runtimes.docker_templates). A runtime that cannot
    # build any (process) lists the default alone and answers builds with
    # TemplatesUnsupported. ``SandboxSpec.template`` names one that templates() lists.

    async def templates(self) -> builtins.list[Template]:
        """Every template of this installation, the default first, then by name."""
        ...

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        """Build (or rebuild: it replaces one of the same name) the template ``name``,
        calling ``progress`` with each line of build output. Raises
        :class:`TemplateBuildError` (the image is not there, the build failed: nothing
        is left of it), :class:`TemplatesUnsupported`, or :class:`InvalidTemplate` for the
        default's name or a malformed one."""
        ...

    async def remove_template(self, name: str) -> None:
        """Remove the template ``name``. Refuses with :class:`TemplateInUse` while a sandbox
        (in any state) runs it, :class:`TemplateNotFound` when there is none,
        :class:`InvalidTemplate` for the default."""
        ...
