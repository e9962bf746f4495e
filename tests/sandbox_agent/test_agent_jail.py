"""The workspace jail: no path leaves the workspace; refusals touch nothing."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import Served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_agent.errors import BadPath, PathEscapes
from sandbox_agent.files import Workspace


@pytest.fixture(scope="module")
def jail() -> Iterator[tuple[Workspace, Path]]:
    """A workspace with symlinks in and out, next to a directory it must never reach."""
    with tempfile.TemporaryDirectory() as base:
        root = Path(base) / "ws"
        (root / "in" / "deep").mkdir(parents=True)
        (Path(base) / "secret").mkdir()
        os.symlink(Path(base) / "secret", root / "out")
        os.symlink("/", root / "slash")
        os.symlink("../..", root / "in" / "up2")
        os.symlink("deep", root / "in" / "side")
        os.symlink("loop", root / "loop")
        yield Workspace(root), Path(base)


segments = st.one_of(
    st.sampled_from(
        ["..", ".", "", "in", "deep", "out", "slash", "up2", "side", "loop", "x", "...", "..x", "~"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(parts=st.lists(segments, max_size=8), absolute=st.booleans())
def test_no_generated_path_escapes(jail: tuple[Workspace, Path], parts: list[str], absolute: bool) -> None:
    workspace, _ = jail
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        resolved = workspace.resolve(path)
    except (BadPath, PathEscapes):
        return
    real = Path(os.path.realpath(resolved.named))
    assert real == workspace.root or workspace.root in real.parents
    assert resolved.real == real
    assert ".." not in resolved.rel.split("/")
    assert not resolved.rel.startswith("/")


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("../x", BadPath),
        ("in/../../x", BadPath),
        ("/etc/passwd", BadPath),
        ("a\x00b", BadPath),
        ("out", PathEscapes),
        ("out/new-file", PathEscapes),
        ("slash/etc", PathEscapes),
        ("in/up2", PathEscapes),
    ],
)
def test_refused_paths(jail: tuple[Workspace, Path], path: str, error: type[Exception]) -> None:
    workspace, _ = jail
    with pytest.raises(error):
        workspace.resolve(path)


def test_symlinks_that_stay_inside_are_fine(jail: tuple[Workspace, Path]) -> None:
    workspace, _ = jail
    resolved = workspace.resolve("in/side")
    assert resolved.rel == "in/side"
    assert resolved.real == workspace.root / "in" / "deep"
    assert workspace.resolve("./in//deep/").rel == "in/deep"
    assert workspace.resolve("").is_root


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("POST", "/dir/out/newdir"),
        ("POST", "/file/out/newfile"),
        ("GET", "/file/out/secret.txt"),
        ("DELETE", "/file/out/secret.txt"),
        ("GET", "/file-content/out/secret.txt"),
        ("GET", "/file-content/out"),
    ],
)
async def test_http_refuses_symlinks_out_and_touches_nothing(
    agent: Served, tmp_path: Path, method: str, route: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, agent.settings.workspace / "out")
    response = await agent.client.request(method, route)
    assert response.status_code == 403
    assert "detail" in response.json()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret"


@pytest.mark.parametrize(
    "route", ["/file/..%2F..%2Fetc%2Fpasswd", "/file/%2Fetc%2Fpasswd", "/dir/a%2F..%2F..%2Fx"]
)
async def test_http_refuses_encoded_escapes(agent: Served, route: str) -> None:
    response = await agent.client.get(route) if route.startswith("/file") else await agent.client.post(route)
    assert response.status_code == 400
    assert not (agent.settings.workspace.parent / "x").exists()
