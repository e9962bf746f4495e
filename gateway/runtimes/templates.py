"""Templates: the named images a sandbox can run (the templates block of
:class:`~gateway.runtimes.base.Runtime`): the default every runtime has, what a built one
may be called, and how one is listed and built from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import InvalidTemplate

__all__ = ["DEFAULT_TEMPLATE", "TEMPLATE_NAME", "Template", "TemplateSource", "check_template_name"]

#: The name of the template every runtime has: the sandbox it starts when none is asked for.
DEFAULT_TEMPLATE = "default"
#: What a template may be called (it is part of an image reference on docker: lower case).
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_template_name(name: str) -> None:
    """:class:`InvalidTemplate` unless ``name`` may name a template that is built."""
    if name == DEFAULT_TEMPLATE:
        raise InvalidTemplate(
            f"{DEFAULT_TEMPLATE!r} is the runtime's own sandbox: it is not built or removed"
        )
    if not TEMPLATE_NAME.match(name):
        raise InvalidTemplate(
            f"{name!r} is not a template name: lower-case letters, digits, '_', '.', '-' (at most 63)"
        )


@dataclass(frozen=True)
class Template:
    """One template as :meth:`Runtime.templates` lists it."""

    name: str
    #: What it was built from: an image reference, or ``"Dockerfile"``.
    built_from: str
    description: str = ""
    created_at: datetime | None = None
    #: Bytes of its image (``None`` where the runtime cannot know).
    size: int | None = None


@dataclass(frozen=True)
class TemplateSource:
    """What :meth:`Runtime.build_template` builds from: an ``image`` (a local one; a pullable
    reference where a registry answers), or a ``context`` (a tar) holding the ``dockerfile``."""

    image: str | None = None
    context: bytes | None = None
    dockerfile: str = "Dockerfile"
    description: str = ""
