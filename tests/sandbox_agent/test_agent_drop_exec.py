"""The uid-dropping helper (``images/sandbox/drop_exec.c`` through
``sandbox_agent.runnables.drop``): a task started by an agent whose real uid is root and whose
effective uid is the user's ends with every uid and gid the user's and no capability, with its
environment untouched; a program that cannot be exec'd is an ``OSError`` as Popen's would be.

Real processes: the helper is built with ``scripts/build-drop-exec``, and the agent's side runs
in a child interpreter that switches its credentials as the agent does (root only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_agent.runnables import drop

ROOT = Path(__file__).resolve().parents[2]
USER = 65534  # nobody: any uid other than root's

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent's credentials need root")

#: The agent's side: drop_to() as the agent does, then start ``argv`` through the helper.
_AGENT = """
import json, os, subprocess, sys
from sandbox_agent.privileges import drop_to, task_uid
from sandbox_agent.runnables import drop
helper, argv = sys.argv[1], json.loads(sys.argv[2])
drop.helper = lambda: helper or None
drop_to(int(sys.argv[3]), int(sys.argv[3]))
try:
    started = drop.popen(argv, user=task_uid(), pass_fds=(), stdout=subprocess.PIPE, cwd="/",
                         env={"PATH": "/nowhere:/usr/bin:/bin", "TMPDIR": "/kept", "LD_KEPT": "1"})
except OSError as error:
    print(json.dumps({"errno": error.errno, "filename": error.filename}))
else:
    out, _ = started.communicate()
    print(json.dumps({"code": started.returncode, "out": out.decode(), "helper": started.args[0] == helper}))
"""


@pytest.fixture(scope="module")
def helper() -> Iterator[str]:
    # Not under pytest's own temporary directories (root's, 0700): the user must reach it,
    # as it reaches the bundle's.
    with tempfile.TemporaryDirectory(prefix="convoy-drop-exec-") as folder:
        os.chmod(folder, 0o755)
        out = Path(folder) / drop.HELPER_NAME
        built = subprocess.run([str(ROOT / "scripts" / "build-drop-exec"), str(out)], capture_output=True)
        if built.returncode == 3:
            pytest.skip("no C compiler for x86-64 here")
        assert built.returncode == 0, built.stderr
        yield str(out)


def as_agent(helper: str, argv: list[str]) -> dict[str, object]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, "-c", _AGENT, helper, json.dumps(argv), str(USER)],
        capture_output=True, env=env, check=True, cwd="/",
    )  # fmt: skip
    answer: dict[str, object] = json.loads(ran.stdout)
    return answer


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def test_the_task_has_every_uid_and_gid_of_the_user_and_no_capability(helper: str) -> None:
    answer = as_agent(helper, ["cat", "/proc/self/status"])  # found on the PATH, not the first entry
    assert answer["code"] == 0 and answer["helper"] is True
    fields = status_fields(str(answer["out"]))
    assert fields["Uid"].split() == [str(USER)] * 4
    assert fields["Gid"].split() == [str(USER)] * 4
    assert fields["Groups"].split() == []
    for capabilities in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert int(fields[capabilities], 16) == 0, capabilities


def test_the_environment_reaches_the_task_untouched(helper: str) -> None:
    answer = as_agent(helper, ["/bin/sh", "-c", 'echo "$TMPDIR $LD_KEPT"'])
    assert answer == {"code": 0, "out": "/kept 1\n", "helper": True}


def test_the_report_pipe_does_not_reach_the_task(helper: str) -> None:
    answer = as_agent(helper, ["/bin/sh", "-c", "ls /proc/self/fd"])
    assert answer["code"] == 0
    assert sorted(int(fd) for fd in str(answer["out"]).split()) == [0, 1, 2, 3]  # 3: ls's own


@pytest.mark.parametrize("program", ["/no/such/program", "no-such-program-on-path"])
def test_a_program_that_cannot_be_execd_is_an_oserror(helper: str, program: str) -> None:
    assert as_agent(helper, [program]) == {"errno": 2, "filename": program}


def test_without_the_helper_the_fork_path_still_drops() -> None:
    answer = as_agent("", ["cat", "/proc/self/status"])
    assert answer["helper"] is False
    fields = status_fields(str(answer["out"]))
    assert fields["Uid"].split() == [str(USER)] * 4
