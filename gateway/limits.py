"""Conversation limits across every gateway of an installation, with no database.

``max_conversations`` (the installation's) and ``max_conversations_per_user``
count live conversations (STARTING, READY, PAUSED, STOPPING) as the runtime
lists them (which sees every gateway's starts, STARTING included) together
with this gateway's own records; spares count against neither. Two checks:

1. Before a create registers (:func:`live_entries` then :func:`refusal`):
   one listing, then, with no ``await`` between the count and the
   registration, the count of it and of this gateway's records. Within one
   gateway no two creates can both pass it for the last place.
2. After the start is registered (the runtime lists it, or the spare's
   claim is made), the optimistic check (:func:`must_yield`): the installation
   is listed again, and a conversation yields when it counts ``limit`` others
   that it must defer to: every one older by ``(created_at, id)``, and every one
   created before it was first seen registered (plus ``clock_margin``) - those
   may have made their own check before it was registered and not seen it. A
   conversation that yields has its start undone and its client gets the usual
   429; nobody else ever saw its id.

The race window, and its bound: between the two checks, creates of several
gateways may all pass check 1, so for a moment the installation holds more
starts than the limit (at most one per concurrent create; each of the extra
ones lasts one registration, one listing and one removal: well under a second
on Docker). Check 2 closes the window: for any two creates that overlap, the
one registered later lists the other, and of any pair at least one defers to
the other, so never more than the limit survive, as long as (a) a listing
shows every start registered before it began (Docker's and the process
runtime's do) and (b) the gateways' clocks differ by less than
``clock_margin`` (one host: no difference). Past (b), the overshoot is bounded
by the creates registered within the clock difference. The price is paid under
contention only, and bounded: a create that defers only to younger ones (which
may yield themselves) looks again, up to four times a few hundred
milliseconds apart (a later look is as valid as the first: the argument holds for
any check made after the registration), so concurrent creates rarely all yield;
near the limit, two may still both yield where one could have stayed (the
client retries); far from it, no create yields.
``tests/gateway/test_limits_rule.py`` plays random schedules against the rule.

A warm create whose spare another gateway claimed first (``SpareTaken``) goes on
cold under a new id, with the ``created_at`` of its request: it replaces its
record in the same step (check 1 of a later create here counts it once), and
check 2 is made for the new id once its cold start is registered, where the
argument above holds as for any create. While the claim's one call is under
way, this gateway's count sees the spare's id once, for both: a create here
meanwhile may pass check 1 one place too early, and check 2 settles it.

A conversation deleted through another gateway still counts here until this
gateway's next sync (``sync_interval``, 2 s by default) ends its record: for that
moment check 1 errs toward a 429, never toward more than the limit.

The create-rate and failed-start rules (:mod:`gateway.admission`) stay per gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from gateway.errors import LimitReached
from gateway.records import Record
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from gateway.settings import Settings


@dataclass(frozen=True)
class Entry:
    """One live conversation as the limits count it."""

    conversation_id: UUID
    owner: str
    created_at: datetime

    @property
    def key(self) -> tuple[datetime, str]:
        """Age order: the older conversation stays (ties broken by id)."""
        return (self.created_at, str(self.conversation_id))

    @classmethod
    def of(cls, spec: SandboxSpec) -> Entry:
        return cls(spec.conversation_id, spec.owner, spec.created_at)


def live_entries(listed: Iterable[SandboxHandle], records: Iterable[Record]) -> dict[UUID, Entry]:
    """Every live conversation of the installation: the runtime's (no spare, not EXITED) and
    this gateway's ``records`` (live ones that do not yield), by id."""
    entries = {
        handle.conversation_id: Entry.of(handle.spec)
        for handle in listed
        if handle.spec.pool is None and handle.state is not SandboxState.EXITED
    }
    for record in records:
        if not record.yielding:
            entries.setdefault(record.id, Entry.of(record.spec))
    return entries


def refusal(settings: Settings, owner: str, entries: Iterable[Entry]) -> LimitReached | None:
    """Check 1: the 429 a create of ``owner`` gets with ``entries`` live, or ``None``."""
    live = list(entries)
    if len(live) >= settings.max_conversations:
        return LimitReached(
            f"the installation already runs its maximum of {settings.max_conversations} conversations; "
            "delete one or try again later"
        )
    mine = sum(1 for entry in live if entry.owner == owner)
    if mine >= settings.max_conversations_per_user:
        return LimitReached(
            f"{owner!r} already has {mine} live conversations, the maximum per user; delete one first"
        )
    return None


#: The shape of :func:`must_yield` (``me, seen_at, others, limit, margin``), for tests of rules.
YieldRule = Callable[["Entry", datetime, list["Entry"], int, float], bool]


def must_yield(me: Entry, seen_at: datetime, others: Iterable[Entry], limit: int, margin: float) -> bool:
    """Check 2 (see the module docstring): ``me``, first seen registered at ``seen_at``, yields
    when it defers to ``limit`` of ``others``."""
    horizon = seen_at + timedelta(seconds=margin)
    deferred = sum(
        1
        for other in others
        if other.conversation_id != me.conversation_id and (other.key < me.key or other.created_at < horizon)
    )
    return deferred >= limit


def older_fill(me: Entry, others: Iterable[Entry], limit: int) -> bool:
    """``limit`` older ones are listed: ``me`` yields whatever else happens (no waiting helps)."""
    return sum(1 for other in others if other.key < me.key) >= limit


@dataclass(frozen=True)
class Verdict:
    """Check 2's answer: why it yields; ``final`` when waiting cannot change it (older ones
    fill the limit), else a younger create it defers to may yield itself (look again)."""

    reason: str
    final: bool


def verdict(settings: Settings, me: Entry, seen_at: datetime, entries: Iterable[Entry]) -> Verdict | None:
    """Check 2 for both limits; ``None`` when ``me`` stays."""
    live = list(entries)
    margin = settings.limit_clock_margin
    if must_yield(me, seen_at, live, settings.max_conversations, margin):
        reason = (
            f"the installation already runs its maximum of {settings.max_conversations} conversations "
            "(another gateway's create came first); try again later"
        )
        return Verdict(reason, older_fill(me, live, settings.max_conversations))
    mine = [entry for entry in live if entry.owner == me.owner]
    if must_yield(me, seen_at, mine, settings.max_conversations_per_user, margin):
        reason = f"{me.owner!r} already has the maximum of live conversations per user; delete one first"
        return Verdict(reason, older_fill(me, mine, settings.max_conversations_per_user))
    return None
