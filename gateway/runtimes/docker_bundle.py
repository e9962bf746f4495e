"""The agent bundle on Docker: where it is mounted and how the agent is started from it. No aiodocker here.

The sandbox image's ``/opt/convoy`` is self-contained (``images/sandbox/bundle.py``:
the interpreter, its stdlib and packages, its shared libraries and the glibc
loader), so the agent runs in any image it is mounted into. Every sandbox, the
default image's included, starts it the same way (:func:`agent_argv`): through
the bundled loader with ``--library-path`` (not ``LD_LIBRARY_PATH``: nothing
the tasks could inherit), isolated (``-I``) from the image's ``PYTHON*``
variables. A template's sandbox gets the bundle as a read-only volume
(:func:`bundle_mount`; see :mod:`gateway.runtimes.docker_templates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
