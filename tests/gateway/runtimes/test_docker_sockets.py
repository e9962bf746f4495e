"""The network-less sandbox as plain data and files (no Docker): its container configuration,
and the socket directories' permissions, orphans and limits (gateway.runtimes.docker_sockets)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from uuid import uuid4

import pytest
from gw_helpers import make_spec

from gateway.errors import SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_sandboxes import container_policy
from gateway.runtimes.docker_sockets import SocketDirs
from gateway.settings import Settings


def test_a_sandbox_with_a_socket_directory_has_no_network_and_listens_on_its_socket() -> None:
    policy = container_policy(Settings())
    spec = make_spec()
    names = cfg.Names.of("inst", spec.conversation_id)
    labels = cfg.sandbox_labels(spec, "inst", "1")
    config = cfg.sandbox_config(policy, spec, labels, names, None, socket_dir="/srv/sockets/x")
    host = config["HostConfig"]
    assert host["NetworkMode"] == "none" and "NetworkingConfig" not in config and "ExposedPorts" not in config
    assert {"Type": "bind", "Source": "/srv/sockets/x", "Target": cfg.SOCKET_DIR} in host["Mounts"]
    command = config["Cmd"]
    assert command[command.index("--uds") + 1] == cfg.AGENT_SOCKET and "--port" not in command
    assert config["Labels"][cfg.NETWORK] == "none"
    assert config["Labels"][cfg.AGENT_SOCKET_PATH] == "/srv/sockets/x/agent.sock"
    # The same spec on a network of its own: TCP, and no socket.
    subnet = next(cfg.free_subnets("10.213.0.0/28", []))
    relayed = cfg.sandbox_config(policy, spec, labels, names, subnet)
    assert relayed["HostConfig"]["NetworkMode"] == names.network and "--uds" not in relayed["Cmd"]
    assert cfg.NETWORK not in relayed["Labels"]
    assert command[command.index("--handed-token") + 1] == cfg.HANDED_TOKEN  # the default image's
    assert "--handed-token" not in relayed["Cmd"]  # a relayed one's token comes through the engine


async def test_a_token_handed_over_is_in_the_directory_until_sealed() -> None:
    root = Path(os.environ["CONVOY_DOCKER_SOCKET_DIR"]) / uuid4().hex[:8]
    sockets = SocketDirs(root, "inst")
    names = cfg.Names.of("inst", uuid4())
    made = Path(await sockets.make(names, token="secret-token"))
    handed = made / Path(cfg.HANDED_TOKEN).name
    assert handed.read_text() == "secret-token" and handed.stat().st_mode & 0o777 == 0o644
    assert await sockets.handed_token(names) == "secret-token"  # a listing during the first boot
    await sockets.seal(names)
    assert not handed.exists() and os.listdir(made) == []
    assert await sockets.handed_token(names) is None
    await sockets.forget()


async def test_directories_are_private_sealed_once_ready_and_orphans_found_by_age() -> None:
    root = Path(os.environ["CONVOY_DOCKER_SOCKET_DIR"]) / uuid4().hex[:8]  # short: tests/conftest.py
    sockets = SocketDirs(root, "inst")
    names = cfg.Names.of("inst", uuid4())
    made = Path(await sockets.make(names))
    assert made == root / "inst" / names.sandbox[-36:]
    modes = [os.stat(path).st_mode & 0o777 for path in (root, root / "inst", made)]
    assert modes == [0o700, 0o700, 0o777]  # writable for the agent until sealed
    assert sockets.socket(names) == f"{made}/agent.sock"
    await sockets.seal(names)
    assert os.stat(made).st_mode & 0o777 == 0o755
    conversation = names.sandbox[-36:]
    assert [str(found) for found in await sockets.orphans(set(), 0.0)] == [conversation]
    assert await sockets.orphans(set(), 3600.0) == []  # too young: a start may be under way
    assert await sockets.orphans({uuid4()} | set(await sockets.orphans(set(), 0.0)), 0.0) == []
    await asyncio.to_thread((root / "inst" / "not-a-conversation").mkdir)
    assert len(await sockets.orphans(set(), 0.0)) == 1
    assert await sockets.remove(names) is True and await sockets.remove(names) is False
    assert await sockets.forget() == 1  # the stray directory
    assert not await asyncio.to_thread((root / "inst").exists)


async def test_a_socket_path_too_long_for_the_kernel_is_a_start_error(tmp_path: Path) -> None:
    sockets = SocketDirs(tmp_path / ("x" * 80), "inst")
    with pytest.raises(SandboxStartError, match="too long"):
        await sockets.make(cfg.Names.of("inst", uuid4()))
