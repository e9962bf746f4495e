"""The Docker runtime's usage, from a fake engine's stats and a volume on disk: what each
field is read from (cgroup v1 stats as the engine gives them), and None when not running."""

from __future__ import annotations

from pathlib import Path

from fake_docker import fake_sandboxes
from fake_engine import FakeEngine
from gw_helpers import make_spec

from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_usage import usage_of

MiB = 1024 * 1024

#: One one-shot sample as Docker 20.10 answers it on cgroup v1 (the fields read, and a few more).
STATS = {
    "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}, "system_cpu_usage": 9},
    "precpu_stats": {},
    "memory_stats": {"usage": 80 * MiB, "max_usage": 120 * MiB, "stats": {"total_inactive_file": 16 * MiB}},
    "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 200}, "eth1": {"rx_bytes": 24, "tx_bytes": 2}},
    "pids_stats": {"current": 7},
}


def test_a_sample_is_read_as_docker_stats_shows_it() -> None:
    usage = usage_of(STATS, (1234, True), None)
    assert usage.cpu_seconds == 2.5
    assert usage.memory_bytes == 64 * MiB  # less the inactive page cache
    assert usage.memory_peak_bytes == 120 * MiB  # cgroup v1's max_usage
    assert (usage.network_rx_bytes, usage.network_tx_bytes) == (1024, 202)  # every interface
    assert usage.pids == 7 and usage.disk_bytes == 1234 and usage.disk_complete
    assert usage_of(STATS, None, 200 * MiB).memory_peak_bytes == 200 * MiB  # cgroup v2's memory.peak
    empty = usage_of({}, None, None)
    assert (empty.cpu_seconds, empty.memory_bytes, empty.network_rx_bytes, empty.disk_bytes) == (None,) * 4


async def test_usage_of_a_running_sandbox_and_none_otherwise(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    assert await runtime.usage(spec.conversation_id) is None
    await runtime.start(spec)
    names = cfg.Names.of("fake", spec.conversation_id)
    volume = tmp_path / "volume"
    (volume / "workspace" / "sub").mkdir(parents=True)
    (volume / "workspace" / "sub" / "a.txt").write_bytes(b"x" * 300)
    (volume / "workspace" / "link").symlink_to("/etc/passwd")  # not followed
    (volume / "state").mkdir()
    (volume / "state" / "events.jsonl").write_bytes(b"y" * 999)  # the state is not the workspace
    engine.volumes_by_name[names.volume]["mountpoint"] = str(volume)
    engine.containers_by_name[names.sandbox].stats = STATS
    usage = await runtime.usage(spec.conversation_id)
    assert usage is not None and usage.disk_bytes == 300 and usage.cpu_seconds == 2.5
    # A later sample with a lower peak keeps the highest seen.
    engine.containers_by_name[names.sandbox].stats = {**STATS, "memory_stats": {"usage": 10 * MiB}}
    later = await runtime.usage(spec.conversation_id)
    assert later is not None and later.memory_bytes == 10 * MiB and later.memory_peak_bytes == 120 * MiB
    # A volume the gateway cannot read: no disk figure, the rest still there.
    engine.volumes_by_name[names.volume]["mountpoint"] = str(tmp_path / "elsewhere")
    blind = await runtime.usage(spec.conversation_id)
    assert blind is not None and blind.disk_bytes is None and blind.pids == 7
    engine.exit(names.sandbox, 0)
    assert await runtime.usage(spec.conversation_id) is None
    await runtime.remove(spec.conversation_id)
