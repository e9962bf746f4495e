"""A pod's agent container as a local process: what a kubelet and a container runtime do.

The container must run the convoy agent (``... -m sandbox_agent ARGS``; no
command nor args: the sandbox image's default ones). It runs as
``sys.executable -m sandbox_agent ARGS`` in a session of its own, with:

- ``--host`` replaced by the pod's own loopback address, ``--run-as`` dropped
  (nothing here runs as root);
- every absolute path in the arguments, in ``workingDir`` and in an env value
  mapped into the pod's folder: a path at or under a ``volumeMounts`` path to
  that volume's directory (the longest mount wins), any other into the pod's
  own ``rootfs``. Volumes: ``emptyDir`` (a fresh directory), ``secret`` and
  ``configMap`` (one file per key, or per ``items[].path``, written at start);
- env: ``value``, ``valueFrom`` (``secretKeyRef``, ``configMapKeyRef``,
  ``fieldRef`` of the pod's name, namespace, IP, node), ``envFrom``, over a
  minimal environment (PATH, the repository on PYTHONPATH, HOSTNAME).

A Secret or ConfigMap that does not exist (and is not optional) is a
:class:`ConfigError`: the kubelet reports it and tries again, as a real one does.
Only the first container runs; init containers are taken as succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

Obj = dict[str, Any]
Lookup = Callable[[str, str], Obj | None]  # (kind "Secret"/"ConfigMap", name) -> the object
REPOSITORY = Path(__file__).resolve().parents[4]
# The sandbox image's own arguments (images/sandbox/Dockerfile), for a container that gives none.
IMAGE_ARGS = [
    "--host",
    "0.0.0.0",
    "--port",
    "8080",
    "--workspace",
    "/data/workspace",
    "--state-dir",
    "/data/state",
]


class ConfigError(Exception):
    """The container cannot be created yet (a missing Secret...): CreateContainerConfigError."""


class NotAnAgent(Exception):
    """The container does not run ``-m sandbox_agent``: it cannot run here."""


@dataclass
class Running:
    """A started container: its process (leader of its own session), log, address."""

    process: asyncio.subprocess.Process
    log: Path
    host: str
    port: int

    def signal(self, number: int) -> None:
        """Send ``number`` to the container's whole session (its tasks too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _agent_args(container: Obj) -> list[str]:
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if not argv:
        return list(IMAGE_ARGS)
    for index in range(len(argv) - 1):
        if argv[index] == "-m" and argv[index + 1] == "sandbox_agent":
            return argv[index + 2 :]
    raise NotAnAgent(f"container {container.get('name')!r} does not run -m sandbox_agent: {argv}")


def _decoded(kind: str, obj: Obj) -> dict[str, bytes]:
    if kind == "Secret":
        found = {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
        return found | {key: value.encode() for key, value in (obj.get("stringData") or {}).items()}
    return {key: value.encode() for key, value in (obj.get("data") or {}).items()}


class PodFiles:
    """The pod's folder: ``volumes/<name>`` per volume, ``rootfs`` for every other path."""

    def __init__(self, pod: Obj, folder: Path, lookup: Lookup) -> None:
        self.pod, self.folder, self.lookup = pod, folder, lookup
        self.container = pod["spec"]["containers"][0]
        self.mounts: list[tuple[str, Path]] = []

    def materialise(self) -> None:
        """Write every volume the container mounts; a missing source is a :class:`ConfigError`."""
        volumes = {volume["name"]: volume for volume in self.pod["spec"].get("volumes") or []}
        for mount in self.container.get("volumeMounts") or []:
            local = self.folder / "volumes" / mount["name"]
            self._volume(volumes[mount["name"]], local)
            self.mounts.append((mount["mountPath"].rstrip("/") or "/", local / mount.get("subPath", "")))
        self.mounts.sort(key=lambda item: len(item[0]), reverse=True)
        (self.folder / "rootfs").mkdir(parents=True, exist_ok=True)

    def _volume(self, volume: Obj, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        source = volume.get("secret") or volume.get("configMap")
        if source is None:
            return  # emptyDir (or anything else): an empty directory
        kind = "Secret" if "secret" in volume else "ConfigMap"
        name = source.get("secretName") or source.get("name") or ""
        obj = self.lookup(kind, name)
        if obj is None:
            if source.get("optional"):
                return
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        data = _decoded(kind, obj)
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            target = local / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.get(item["key"], b""))
            target.chmod(item.get("mode", source.get("defaultMode", 0o644)) & 0o777)

    def path(self, inside: str) -> str:
        """Where the container's absolute path ``inside`` is on this machine."""
        for mount_path, local in self.mounts:
            if inside == mount_path or inside.startswith(mount_path.rstrip("/") + "/"):
                return str(local / inside[len(mount_path) :].lstrip("/"))
        return str(self.folder / "rootfs" / inside.lstrip("/"))

    def arguments(self, host: str) -> tuple[list[str], int]:
        """The agent's arguments on this machine, and the port it listens on."""
        given, args, port = _agent_args(self.container), [], 8080
        skip = False
        for index, arg in enumerate(given):
            if skip:
                skip = False
                continue
            previous = given[index - 1] if index else ""
            if arg == "--run-as":
                skip = True
            elif previous == "--host":
                args.append(host)
            elif previous == "--port":
                port = int(arg)
                args.append(arg)
            elif arg.startswith("/"):
                args.append(self.path(arg))
            else:
                args.append(arg)
        return args, port

    def _value(self, env: Obj, host: str) -> str | None:
        source = env.get("valueFrom")
        if source is None:
            value = str(env.get("value", ""))
            return self.path(value) if value.startswith("/") and ":" not in value else value
        if "fieldRef" in source:
            fields: dict[str, str] = {
                "metadata.name": self.pod["metadata"]["name"],
                "status.podIP": host,
                "metadata.namespace": self.pod["metadata"].get("namespace", ""),
                "spec.nodeName": self.pod["spec"].get("nodeName", ""),
            }
            return fields.get(source["fieldRef"].get("fieldPath", ""), "")
        ref, kind = (
            (source["secretKeyRef"], "Secret")
            if "secretKeyRef" in source
            else (source.get("configMapKeyRef") or {}, "ConfigMap")
        )
        obj = self.lookup(kind, ref.get("name", ""))
        data = None if obj is None else _decoded(kind, obj).get(ref.get("key", ""))
        if data is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'{kind.lower()} "{ref.get("name")}" or its key "{ref.get("key")}" not found')
        return data.decode()

    def environment(self, host: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPOSITORY),
            "HOSTNAME": self.pod["metadata"]["name"],
            "HOME": self.path("/root"),
        }
        for source in self.container.get("envFrom") or []:
            ref, kind = (
                (source["secretRef"], "Secret")
                if "secretRef" in source
                else (source.get("configMapRef") or {}, "ConfigMap")
            )
            obj = self.lookup(kind, ref.get("name", ""))
            if obj is None and not ref.get("optional"):
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            env |= {
                source.get("prefix", "") + key: value.decode()
                for key, value in ({} if obj is None else _decoded(kind, obj)).items()
            }
        for item in self.container.get("env") or []:
            if (value := self._value(item, host)) is not None:
                env[item["name"]] = value
        return env


def _prepare(files: PodFiles, host: str) -> tuple[list[str], int, dict[str, str], str, IO[bytes]]:
    """Blocking: the files, arguments, port, environment, working directory and open log."""
    files.materialise()
    args, port = files.arguments(host)
    env = files.environment(host)
    cwd = files.path(files.container["workingDir"]) if files.container.get("workingDir") else files.path("/")
    Path(cwd).mkdir(parents=True, exist_ok=True)
    return args, port, env, cwd, (files.folder / "container.log").open("ab")


async def start(files: PodFiles, host: str) -> Running:
    """Materialise the pod's files and start its agent bound to ``host``."""
    args, port, env, cwd, output = await asyncio.to_thread(_prepare, files, host)
    with output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sandbox_agent",
            *args,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Running(process, Path(output.name), host, port)


async def stop(running: Running, grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code as a container reports it."""
    running.signal(signal.SIGCONT)  # a frozen container must be able to take its SIGTERM
    running.signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(running.process.wait(), grace)
    except TimeoutError:
        running.signal(signal.SIGKILL)
        await running.process.wait()
    return exit_code(running.process.returncode)


def exit_code(returncode: int | None) -> int:
    """A container's exit code: 128 + the signal for a process a signal ended."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode
