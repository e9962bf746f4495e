"""Templates on the runtimes without images: the process runtime's (the default alone)
and the memory runtime's fake catalogue (templates kept in memory, for fast tests).

Neither runs anything different for a template: on the memory runtime a
sandbox of template ``node`` is the same in-process agent, told its template's
name. What they share with the Docker runtime is the contract of the
templates block of :class:`~gateway.runtimes.base.Runtime`: names, the default
first, refusals (in use, unknown, the default), and progress lines.
"""

from __future__ import annotations

import builtins
import io
import posixpath
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from gateway.runtimes.base import (
    DEFAULT_TEMPLATE,
    InvalidTemplate,
    ProgressCallback,
    Template,
    TemplateBuildError,
    TemplateInUse,
    TemplateNotFound,
    TemplateSource,
    TemplatesUnsupported,
    check_template_name,
)


class Catalogue(Protocol):
    """The templates block of :class:`~gateway.runtimes.base.Runtime`, kept by an object of its own."""

    async def templates(self) -> list[Template]: ...

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template: ...

    async def remove_template(self, name: str) -> None: ...


class CatalogueTemplates:
    """A runtime's templates block, handed to its :class:`Catalogue` ``_templates``
    (set by the runtime's ``__init__``)."""

    _templates: Catalogue

    async def templates(self) -> builtins.list[Template]:
        return await self._templates.templates()

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        return await self._templates.build_template(name, source, progress)

    async def remove_template(self, name: str) -> None:
        await self._templates.remove_template(name)


class DefaultTemplateOnly:
    """The process runtime's templates: its own agent, and nothing to build."""

    def __init__(self, runtime: str, description: str) -> None:
        self._runtime = runtime
        self.default = Template(DEFAULT_TEMPLATE, built_from=runtime, description=description)

    async def templates(self) -> list[Template]:
        return [self.default]

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        raise TemplatesUnsupported(
            f"the {self._runtime} runtime runs its own agent only: templates need the docker runtime"
        )

    async def remove_template(self, name: str) -> None:
        check_template_name(name)
        raise TemplateNotFound(
            f"no template {name!r}: the {self._runtime} runtime has only {DEFAULT_TEMPLATE!r}"
        )


class MemoryTemplates:
    """A catalogue in memory. A build from an ``image`` always succeeds (there is no
    engine to ask); one from a context needs its ``dockerfile`` in the tar, whose
    lines are the progress. ``in_use`` says which templates sandboxes run."""

    def __init__(self, in_use: Callable[[], set[str]]) -> None:
        self._in_use = in_use
        self._built: dict[str, Template] = {}
        self.default = Template(DEFAULT_TEMPLATE, built_from="memory", description="the in-process agent")

    async def templates(self) -> list[Template]:
        return [self.default, *(self._built[name] for name in sorted(self._built))]

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        check_template_name(name)
        if source.image is not None:
            lines, built_from = [f"FROM {source.image}"], source.image
        else:
            lines, built_from = _dockerfile_lines(source), "Dockerfile"
        for line in lines:
            if progress:
                await progress(line)
        template = Template(
            name, built_from=built_from, description=source.description, created_at=datetime.now(UTC), size=0
        )
        self._built[name] = template
        return template

    async def remove_template(self, name: str) -> None:
        check_template_name(name)
        if name not in self._built:
            raise TemplateNotFound(f"no template {name!r}")
        if name in self._in_use():
            raise TemplateInUse(f"template {name!r} is in use by running conversations: end them first")
        del self._built[name]


def _dockerfile_lines(source: TemplateSource) -> list[str]:
    try:
        with tarfile.open(fileobj=io.BytesIO(source.context or b""), mode="r:*") as tar:
            wanted = posixpath.normpath(source.dockerfile)
            found = next(m for m in tar.getmembers() if m.isfile() and posixpath.normpath(m.name) == wanted)
            member = tar.extractfile(found)
            text = member.read().decode(errors="replace") if member else ""
    except (tarfile.TarError, StopIteration):
        raise TemplateBuildError(f"the build context holds no {source.dockerfile}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines or not lines[0].upper().startswith("FROM"):
        raise TemplateBuildError(f"{source.dockerfile} does not start with FROM")
    return lines


__all__ = ["Catalogue", "CatalogueTemplates", "DefaultTemplateOnly", "InvalidTemplate", "MemoryTemplates"]
