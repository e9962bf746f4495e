"""The contract between gateway and agent is written once: every name in
``sandbox_agent.contract``, none of its values spelled out anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from sandbox_agent import contract, protocol

ROOT = Path(__file__).resolve().parents[2]
#: Where the gateway and the agent meet: the agent's environment, header and close codes.
USERS = [
    *sorted((ROOT / "gateway" / "runtimes").glob("*.py")),
    *sorted((ROOT / "sandbox_agent").rglob("*.py")),
    ROOT / "gateway" / "proxy.py",
    ROOT / "gateway" / "asyncapi.py",
    ROOT / "scripts" / "bench_agent.py",
]


def _literals(path: Path) -> list[str]:
    """The string constants of a module, docstrings excepted."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_every_name_of_the_contract_is_exported_and_re_exported() -> None:
    public = {name for name in vars(contract) if name.isupper() and not name.startswith("_")}
    assert set(contract.__all__) == public
    for name in public:
        assert getattr(protocol, name) is getattr(contract, name), name


def test_no_module_spells_out_a_value_of_the_contract() -> None:
    values = {
        getattr(contract, name) for name in contract.__all__ if isinstance(getattr(contract, name), str)
    }
    found = [
        (path.relative_to(ROOT).as_posix(), text)
        for path in USERS
        if path.name != "contract.py"
        for text in _literals(path)
        if text.startswith(contract.RESERVED_ENV_PREFIX) or text in values
    ]
    assert not found


def test_every_close_code_has_a_meaning() -> None:
    names = [name for name in contract.__all__ if name.startswith("WS_CLOSE_") and name != "WS_CLOSE_CODES"]
    codes = {getattr(contract, name) for name in names}
    assert codes == set(contract.WS_CLOSE_CODES)
    assert all(contract.WS_CLOSE_CODES.values())
