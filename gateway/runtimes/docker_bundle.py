"""The agent bundle on Docker: where it is mounted and how the agent is started from it. No aiodocker here.

The sandbox image's ``/opt/convoy`` is self-contained (``images/sandbox/bundle.py``:
the interpreter, its stdlib and packages, its shared libraries and the glibc
loader), so the agent runs in any image it is mounted into. Every sandbox, the
default image's included, starts it the same way (:func:`agent_argv`): through
the bundled loader with ``--library-path`` (not ``LD_LIBRARY_PATH``: nothing
the tasks could inherit), isolated (``-I``) from the image's ``PYTHON*``
variables. A template's sandbox gets the bundle as a read-only volume
(:func:`bundle_mount`; see :mod:`gateway.runtimes.docker_templates`), which
:class:`BundleVolumes` fills once per sandbox image build and removes once that
build was replaced and nothing mounts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import EngineError
from gateway.runtimes.base import TemplateNotFound

BUNDLE_DIR = "/opt/convoy"
LOADER = f"{BUNDLE_DIR}/lib/ld-linux-x86-64.so.2"
#: On the bundle's volume and its filler container: the id of the sandbox image it was copied from.
BUNDLE_LABEL = "convoy.agent-bundle"


def agent_argv(arguments: list[str]) -> tuple[list[str], list[str]]:
    """``(Entrypoint, Cmd)`` of a sandbox whose agent takes ``arguments``."""
    python = ["--library-path", f"{BUNDLE_DIR}/lib", f"{BUNDLE_DIR}/bin/python3", "-I", "-X", "utf8"]
    return [LOADER], [*python, "-m", "sandbox_agent", *arguments]


def bundle_volume_name(image_id: str) -> str:
    """The volume holding the bundle of the sandbox image ``image_id``: one per image build."""
    return f"convoy-agent-bundle-{image_id.removeprefix('sha256:')[:16]}"


def bundle_mount(volume: str) -> dict[str, Any]:
    """Read-only, and never filled from the template's own ``/opt/convoy`` (``NoCopy``)."""
    return {
        "Type": "volume",
        "Source": volume,
        "Target": BUNDLE_DIR,
        "ReadOnly": True,
        "VolumeOptions": {"NoCopy": True},
    }


@dataclass(frozen=True)
class TemplateRun:
    """How a sandbox runs a template other than the default (see gateway.runtimes.docker_templates):
    its image (by id), the agent bundle's volume, and what it adds to the image's environment."""

    image: str
    bundle_volume: str
    env: dict[str, str]


class BundleEngine(Protocol):
    """The engine calls the bundle's volumes need (a part of ``TemplateEngine``)."""

    async def image(self, name: str) -> dict[str, Any] | None: ...
    async def remove_image(self, name: str) -> bool: ...
    async def inspect(self, name: str) -> dict[str, Any] | None: ...
    async def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def create_container(self, name: str, config: dict[str, Any]) -> str: ...
    async def remove_container(self, name: str) -> bool: ...
    async def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    async def remove_volume(self, name: str) -> bool: ...


class BundleVolumes:
    """The bundle volumes on one engine, as one gateway (sandbox image ``default_image``) sees them."""

    def __init__(self, engine: BundleEngine, default_image: str) -> None:
        self._engine = engine
        self._default_image = default_image
        self._bundle: str | None = None
        self._lock = asyncio.Lock()

    async def volume(self) -> str:
        """The name of the volume that holds the bundle of the sandbox image, made once (and
        again when its filler is gone: removed as stale by a gateway on a newer image)."""
        async with self._lock:
            if self._bundle is None or await self._engine.inspect(self._bundle) is None:
                self._bundle = await self._fill()
            return self._bundle

    async def remove_stale(self) -> int:
        """Remove the bundle volumes of sandbox images that were replaced (no tag any more)
        and that no container but their filler mounts, their fillers and, where no container
        runs it, the image; returns how many volumes. One that is still mounted is left for
        the next clean-up."""
        removed = 0
        current = await self._engine.image(self._default_image)
        for volume in await self._engine.volumes({"label": [BUNDLE_LABEL]}):
            name, image_id = str(volume["Name"]), (volume.get("Labels") or {}).get(BUNDLE_LABEL)
            if not image_id or not name.startswith(bundle_volume_name("")):
                continue
            if current is not None and image_id == current.get("Id"):
                continue  # ours (a sandbox image named by its id has no tag)
            image = await self._engine.image(image_id)
            if image is not None and image.get("RepoTags"):
                continue  # a sandbox image some gateway may still start: its bundle is in use
            mounted_by = await self._engine.containers({"volume": [name]})
            if any(f"/{name}" not in (container.get("Names") or []) for container in mounted_by):
                continue  # a sandbox (perhaps of another installation) runs with it
            try:
                await self._engine.remove_container(name)  # the filler
                removed += int(await self._engine.remove_volume(name))
            except EngineError:
                continue  # mounted meanwhile: next time
            if image is not None:
                with contextlib.suppress(EngineError):  # still run by some container: it stays
                    await self._engine.remove_image(image_id)
        return removed

    async def _fill(self) -> str:
        image = await self._engine.image(self._default_image)
        if image is None:
            raise TemplateNotFound(
                f"the sandbox image {self._default_image} is missing: run scripts/build-images"
            )
        image_id = str(image["Id"])
        name = bundle_volume_name(image_id)
        if await self._engine.inspect(name) is not None:
            return name
        labels = {BUNDLE_LABEL: image_id}
        await self._engine.create_volume(name, labels)
        config = {
            "Image": image_id,
            "Labels": labels,
            "HostConfig": {"Mounts": [{"Type": "volume", "Source": name, "Target": BUNDLE_DIR}]},
        }
        try:
            await self._engine.create_container(name, config)  # the engine copies /opt/convoy in
        except EngineError as error:
            if "conflict" not in str(error).lower() and "in use" not in str(error).lower():
                raise
            # Another gateway fills it: its filler is listed once the copy is done.
            for _ in range(300):
                if await self._engine.inspect(name) is not None:
                    break
                await asyncio.sleep(0.1)
        return name
