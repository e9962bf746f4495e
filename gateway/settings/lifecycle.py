"""Conversations' lifecycle: how many, how fast they may be made, how long they live idle,
pause and snapshots, the pool of ready sandboxes, and templates."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["LifecycleSettings"]


class LifecycleSettings(BaseModel):
    """Limits and timers, pause and snapshots, the pool, templates."""

    # --- lifecycle --------------------------------------------------------------
    max_conversations: int = Field(200, ge=1)
    max_conversations_per_user: int = Field(20, ge=1)
    idle_timeout: float = Field(1800.0, gt=0, description="Default idle seconds before a reap.")
    max_idle_timeout: float = Field(7 * 24 * 3600.0, gt=0)
    reap_interval: float = Field(10.0, gt=0)
    reconcile_interval: float = Field(30.0, gt=0)
    sync_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between two listings of the runtime: how soon conversations created, "
        "paused or removed through another gateway of the installation show here (firehose included).",
    )
    limit_clock_margin: float = Field(
        1.0,
        ge=0,
        description="Seconds the gateways of one installation's clocks may differ by; the limits hold "
        "across gateways within it (gateway.limits).",
    )
    start_timeout: float = Field(60.0, gt=0)
    error_retention: float = Field(600.0, ge=0, description="Seconds a failed conversation stays visible.")
    create_burst: int = Field(20, ge=1, description="Creates a principal may make at once (token bucket).")
    create_rate: float = Field(1.0, gt=0, description="Creates per second regained, up to the burst.")
    max_failed_starts: int = Field(
        5, ge=1, description="Failed starts of one principal within failed_start_window before 429."
    )
    failed_start_window: float = Field(300.0, gt=0, description="Seconds a failed start counts.")

    # --- pause, snapshots and forks (gateway.pausing, gateway.snapshots) ----------
    on_idle: Literal["delete", "pause"] = Field(
        "delete", description="What happens to an idle conversation that asked for nothing else."
    )
    paused_ttl: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds a paused conversation is kept before it is removed."
    )
    max_snapshots_per_user: int = Field(20, ge=0, description="Snapshots one principal may keep.")

    # --- the pool of ready sandboxes (gateway/pool.py) ---------------------------
    pool_size: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Ready spare sandboxes kept per pool, claimed by a create in one call; unset: "
        "2 on the docker runtime, 0 on the process and memory runtimes.",
    )
    pool_sizes: str = Field(
        "",
        pattern=r"^\s*([a-z0-9][a-z0-9_.-]{0,62}\s*=\s*\d{1,2}\s*(,\s*|$))*$",
        description='Spares of other templates: "node=2,ci=1" (the default template\'s: pool_size).',
    )
    pool_max_spares: int = Field(
        8,
        ge=0,
        description="Spares of all pools together at most. Spares count against no conversation limit "
        "(max_conversations, per user): this bound is theirs.",
    )
    pool_refill_concurrency: int = Field(
        1, ge=1, description="Spares started at once; a refill waits while a user waits on a cold start."
    )

    # --- templates (issue 12) ------------------------------------------------------
    default_template: str = Field(
        "default",
        description="The template of a conversation that names none ('default': the runtime's own sandbox, "
        "on docker the docker_image).",
    )
    template_context_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest build context (a tar) POST /template accepts."
    )

    def pool_sizes_by_template(self) -> dict[str, int]:
        """``{template: spares}`` from ``pool_sizes`` (its pattern has checked the syntax)."""
        pairs = (part.partition("=") for part in self.pool_sizes.split(",") if part.strip())
        return {name.strip(): int(size) for name, _, size in pairs}
