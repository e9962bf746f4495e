"""The agent bundle's volumes on a real engine: one per sandbox image build, and the ones of
a build that was replaced (its image lost its tag) removed by the clean-up once unused."""

from __future__ import annotations

import pytest
from conftest import SANDBOX_IMAGE
from dockertools import adocker, docker

from gateway.runtimes.docker import DockerRuntime
from gateway.runtimes.docker_bundle import BUNDLE_LABEL
from gateway.runtimes.docker_templates import DockerTemplates
from tests.helpers import tar_of

pytestmark = pytest.mark.docker


async def _build(runtime: DockerRuntime, tag: str, marker: str) -> str:
    """An image like the sandbox image (its bundle included) with an id of its own."""
    context = tar_of({"Dockerfile": f"FROM {SANDBOX_IMAGE}\nLABEL convoy.test.bundle={marker}\n"})
    async for item in runtime.engine.build_image(context, tag, {}, "Dockerfile"):
        assert not item.get("error"), item
    image = await runtime.engine.image(tag)
    assert image is not None
    return str(image["Id"])


def _bundles() -> dict[str, str]:
    """Every bundle volume on the engine: its name -> the image id it was copied from."""
    lines = docker("volume", "ls", "--filter", f"label={BUNDLE_LABEL}", "--format", "{{.Name}}").split()
    return {name: docker("volume", "inspect", "-f", f'{{{{index .Labels "{BUNDLE_LABEL}"}}}}', name).strip()
            for name in lines}  # fmt: skip


async def test_the_bundle_of_a_replaced_sandbox_image_is_removed_once_unused(
    docker_runtime: DockerRuntime, docker_install: str
) -> None:
    old_tag, used_tag = f"convoy-test-bundle:{docker_install}", f"convoy-test-bundle-used:{docker_install}"
    old_id = await _build(docker_runtime, old_tag, f"old-{docker_install}")
    used_id = await _build(docker_runtime, used_tag, f"used-{docker_install}")
    user = f"convoy-test-bundle-user-{docker_install}"
    try:
        old_volume = await DockerTemplates(docker_runtime.engine, docker_install, old_tag).bundle_volume()
        used_volume = await DockerTemplates(docker_runtime.engine, docker_install, used_tag).bundle_volume()
        assert _bundles().get(old_volume) == old_id and _bundles().get(used_volume) == used_id
        # A container (created, as a sandbox being started) still mounts the second one.
        await adocker("create", "--name", user, "-v", f"{used_volume}:/opt/convoy:ro", used_id, "true")
        # Both builds are replaced (rebuilt: their tags name another image now); the old images
        # are untagged, held by their fillers.
        for tag in (old_tag, used_tag):
            await adocker("tag", SANDBOX_IMAGE, tag)
        current = DockerTemplates(docker_runtime.engine, docker_install, SANDBOX_IMAGE)
        await current.remove_dangling(min_age=0.0)
        left = _bundles()
        assert old_volume not in left, "the replaced build's bundle, unused, is removed"
        assert docker("ps", "-aq", "--filter", f"name=^{old_volume}$").strip() == "", "and its filler"
        assert docker("images", "-q", old_id, check=False).strip() == "", "and the image it held"
        assert left.get(used_volume) == used_id, "a bundle a container mounts stays"
        # A bundle of an image still tagged (another gateway's sandbox image, the current one) stays.
        await current.bundle_volume()
        await current.remove_dangling(min_age=0.0)
        assert await current.bundle_volume() in _bundles()
    finally:
        docker("rm", "-f", user, check=False)
        for volume_of in (old_id, used_id):
            for name, image in _bundles().items():
                if image == volume_of:
                    docker("rm", "-f", name, check=False)
                    docker("volume", "rm", "-f", name, check=False)
        docker("rmi", old_tag, used_tag, check=False)  # tags only, when they name the sandbox image
        docker("rmi", "-f", old_id, used_id, check=False)
