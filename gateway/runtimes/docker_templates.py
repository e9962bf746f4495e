"""Templates on Docker: local images carrying convoy's labels, with the agent mounted in. No aiodocker here.

A **template** is a local image tagged ``convoy-template/<name>:<install>``
whose labels say it is one (``convoy.template``, ``convoy.install``,
``convoy.template.built-from``, ``.created``, ``.description``); nothing else
is. Both ways of building one go through the engine's build API: ``--from
IMAGE`` is the one-line Dockerfile ``FROM IMAGE`` (the image must be local, or
pullable where a registry answers), ``--file`` a Dockerfile with its context
(``FROM`` any local image). The template ``default`` is the sandbox image
(``docker_image``) itself.

**The agent travels with the sandbox.** The sandbox image's ``/opt/convoy`` is
a self-contained bundle (``images/sandbox/bundle.py``: interpreter, stdlib,
packages, shared libraries, the glibc loader). The runtime copies it once per
sandbox image into the volume ``convoy-agent-bundle-<image id>`` (labelled
``convoy.agent-bundle``; the engine fills an empty volume from the image when
a container mounts it: the filler container, created and never started, stays as the
mark that the copy is whole) and mounts it read-only, without copy, at
``/opt/convoy`` of every template's sandbox. The agent starts through the
bundled loader (:func:`~gateway.runtimes.docker_bundle.agent_argv`), so the image needs no Python and no libc;
``-I`` keeps the image's ``PYTHON*`` variables from it, and no variable of its
own reaches the tasks: they get the image's environment (PATH, ...), plus
``HOME=/tmp`` when the image sets none (the root filesystem is read-only).
Python tasks run the image's ``python3``; with no ``/bin/sh`` a Shell command
string fails (exit 127, saying so) while an argv list runs.

There is one bundle volume per sandbox image build, shared by every installation on
the engine. The clean-up (:meth:`DockerTemplates.remove_dangling`, at start and after)
removes the bundle of a build that was replaced (its image has no tag any more: no
gateway can start it by name) once no container but its filler mounts it, with the
filler and the image it held; a bundle whose image still has a tag is some gateway's
and stays. A gateway whose bundle was removed so fills the current one at its next use.

Removal refuses while a sandbox of the installation (any state) runs the
template (:class:`TemplateInUse`); the engine itself also refuses to delete an
image a container uses, so a template removed behind convoy's back leaves the
running conversations as they are (their containers keep the image).
"""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import EngineError, EngineNotFound
from gateway.runtimes.base import (
    DEFAULT_TEMPLATE,
    ProgressCallback,
    Template,
    TemplateBuildError,
    TemplateInUse,
    TemplateNotFound,
    TemplateSource,
    check_template_name,
)
from gateway.runtimes.docker_bundle import BundleVolumes, TemplateRun
from gateway.runtimes.docker_engine import ImageCalls
from gateway.runtimes.docker_labels import INSTALL, TEMPLATE

BUILT_FROM = "convoy.template.built-from"
CREATED = "convoy.template.created"
DESCRIPTION = "convoy.template.description"
_PULL_TIMEOUT = 120.0


class TemplateEngine(ImageCalls, Protocol):
    """The engine calls templates need (implemented by ``AiodockerEngine`` and the tests' fake)."""

    async def inspect(self, name: str) -> dict[str, Any] | None: ...
    async def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    async def create_container(self, name: str, config: dict[str, Any]) -> str: ...
    async def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def remove_container(self, name: str) -> bool: ...
    async def remove_volume(self, name: str) -> bool: ...


def template_tag(install: str, name: str) -> str:
    return f"convoy-template/{name}:{install}"


def _template_of(image: dict[str, Any], install: str) -> Template | None:
    """The template an image summary (or inspect output) is, or ``None`` when it is none of ours."""
    labels = image.get("Labels") or (image.get("Config") or {}).get("Labels") or {}
    name = labels.get(TEMPLATE)
    if (
        not name
        or labels.get(INSTALL) != install
        or template_tag(install, name) not in (image.get("RepoTags") or [])
    ):
        return None
    try:
        created: datetime | None = datetime.fromisoformat(labels.get(CREATED, ""))
    except ValueError:
        created = None
    return Template(name, labels.get(BUILT_FROM, ""), labels.get(DESCRIPTION, ""), created, image.get("Size"))


def _engine_time(text: object) -> datetime | None:
    """The engine's RFC 3339 time (nanoseconds, ``Z``) as a datetime."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _context_of(image: str) -> bytes:
    buffer = io.BytesIO()
    data = f"FROM {image}\n".encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class DockerTemplates:
    """The templates of one installation on one engine, and the agent bundle they mount."""

    def __init__(self, engine: TemplateEngine, install: str, default_image: str) -> None:
        self._engine = engine
        self._install = install
        self._default_image = default_image
        self._bundles = BundleVolumes(engine, default_image)
        self._builds = 0  # under way here: their intermediate images are dangling and labelled

    async def templates(self) -> list[Template]:
        default = await self._engine.image(self._default_image) or {}
        listed = [
            Template(
                DEFAULT_TEMPLATE,
                built_from=self._default_image,
                description="the convoy sandbox image",
                created_at=_engine_time(default.get("Created")),
                size=default.get("Size"),
            )
        ]
        images = await self._engine.images({"label": [f"{INSTALL}={self._install}", TEMPLATE]})
        found = {t.name: t for t in (_template_of(image, self._install) for image in images) if t}
        return listed + [found[name] for name in sorted(found)]

    async def image_of(self, name: str) -> dict[str, Any]:
        """The inspect output of template ``name``'s image (``TemplateNotFound`` when there is none)."""
        info = await self._engine.image(template_tag(self._install, name))
        if (
            info is None
            or _template_of(info | {"Labels": (info.get("Config") or {}).get("Labels")}, self._install)
            is None
        ):
            raise TemplateNotFound(f"no template {name!r}")
        return info

    async def run_of(self, name: str) -> TemplateRun | None:
        """How a sandbox runs template ``name`` (``None``: the default, the sandbox image itself)."""
        if name == DEFAULT_TEMPLATE:
            return None
        image = await self.image_of(name)
        env = dict(item.partition("=")[::2] for item in (image.get("Config") or {}).get("Env") or [])
        return TemplateRun(
            image=str(image["Id"]),  # by id: the template may be rebuilt or removed meanwhile
            bundle_volume=await self.bundle_volume(),
            env={} if "HOME" in env else {"HOME": "/tmp"},  # the root filesystem is read-only
        )

    async def build(self, name: str, source: TemplateSource, progress: ProgressCallback | None) -> Template:
        check_template_name(name)
        if source.image is not None:
            await self._ensure_local(source.image)
            context, dockerfile, built_from = _context_of(source.image), "Dockerfile", source.image
        elif source.context is not None:
            context, dockerfile, built_from = source.context, source.dockerfile, "Dockerfile"
        else:
            raise TemplateBuildError("a template is built from an image or from a Dockerfile and its context")
        labels = {
            TEMPLATE: name,
            INSTALL: self._install,
            BUILT_FROM: built_from,
            CREATED: datetime.now(UTC).isoformat(),
            DESCRIPTION: source.description,
        }
        tag = template_tag(self._install, name)
        self._builds += 1
        try:
            async for item in self._engine.build_image(context, tag, labels, dockerfile):
                if item.get("error"):
                    raise TemplateBuildError(f"building template {name!r} failed: {item['error'].strip()}")
                line = str(item.get("stream") or item.get("status") or "").rstrip()
                if line and progress is not None:
                    await progress(line)
        except EngineError as error:
            raise TemplateBuildError(f"building template {name!r} failed: {error}") from None
        finally:
            self._builds -= 1
        info = await self._engine.image(tag)
        template = _template_of((info or {}) | {"Labels": labels}, self._install)
        if template is None:
            raise TemplateBuildError(f"building template {name!r} left no image {tag}")
        return template

    async def _ensure_local(self, image: str) -> None:
        if await self._engine.image(image) is not None:
            return
        try:
            async with asyncio.timeout(_PULL_TIMEOUT):
                await self._engine.pull_image(image)
        except (EngineError, TimeoutError) as error:
            raise TemplateBuildError(
                f"image {image!r} is not a local image of the engine and could not be pulled "
                f"(no registry answers?): {error or 'timed out'}"
            ) from None

    async def remove(self, name: str, in_use: int) -> None:
        """Remove template ``name``, which ``in_use`` sandboxes of the installation run."""
        check_template_name(name)
        await self.image_of(name)
        if in_use:
            raise TemplateInUse(
                f"template {name!r} is in use by {in_use} sandbox(es): end their conversations first"
            )
        try:
            await self._engine.remove_image(template_tag(self._install, name))
        except EngineNotFound:
            raise TemplateNotFound(f"no template {name!r}") from None
        except EngineError as error:
            raise TemplateInUse(f"the engine refuses to remove template {name!r}: {error}") from None

    async def remove_dangling(self, min_age: float) -> int:
        """Remove the installation's template images that lost their tag (removed or rebuilt while
        sandboxes ran them), that no container uses any more and that are ``min_age`` seconds
        old, and the agent bundles of replaced sandbox images (:meth:`remove_stale_bundles`);
        returns how many. No image while a build runs here: a build's intermediate images
        are dangling and labelled too (another gateway's build is covered by ``min_age``)."""
        return await self._remove_dangling_images(min_age) + await self.remove_stale_bundles()

    async def _remove_dangling_images(self, min_age: float) -> int:
        if self._builds:
            return 0
        filters = {"label": [f"{INSTALL}={self._install}", TEMPLATE], "dangling": ["true"]}
        removed = 0
        born_before = time.time() - min_age
        for image in await self._engine.images(filters):
            if float(image.get("Created") or 0) > born_before:
                continue
            try:
                removed += int(await self._engine.remove_image(str(image["Id"])))
            except EngineError:
                continue  # still in use by a sandbox: next time
        return removed

    # --- the agent bundle (see gateway.runtimes.docker_bundle) ------------------------

    async def bundle_volume(self) -> str:
        """The name of the volume that holds the bundle of the sandbox image."""
        return await self._bundles.volume()

    async def remove_stale_bundles(self) -> int:
        """Remove the bundles of replaced sandbox images that nothing mounts (see BundleVolumes)."""
        return await self._bundles.remove_stale()
