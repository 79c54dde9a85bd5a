"""What ships imports no dev tooling: the packages of the wheel (and the image) never import the local
stack, the tests, the benchmarks or the soak, except ``tally``'s commands for a checkout, which do
without them where they are not installed."""

from __future__ import annotations

import ast
import sys
import tomllib

import pytest

from deploy import cli
from tests.support.paths import ROOT

SHIPPED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
DEV_TOOLING = {"stack", "tests", "bench", "soak"}


def dev_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of each import of dev tooling that is not guarded by ``except ImportError``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom) and not guarded:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or ""] if node.level == 0 else []
            found.extend((node.lineno, name) for name in names if name.split(".")[0] in DEV_TOOLING)
        if isinstance(node, ast.Try):
            catches = any(_catches_import_error(handler) for handler in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError") for t in types)


def test_the_shipped_packages_are_the_services_and_the_cli() -> None:
    assert set(SHIPPED) == {"schema", "ingest", "query", "aggregator", "deploy"}
    assert not DEV_TOOLING & set(SHIPPED)


@pytest.mark.parametrize("package", SHIPPED)
def test_no_shipped_module_imports_dev_tooling(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in dev_imports(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, "what ships must not need dev tooling:\n" + "\n".join(offenders)


def test_the_check_finds_an_import_of_dev_tooling() -> None:
    tree = ast.parse(
        "import stack.stack\n"
        "from tests.support import fakes\n"
        "def f():\n    from bench import worker\n"
        "try:\n    from soak import harness\nexcept ValueError:\n    pass\n"
        "try:\n    from stack import ports\nexcept ModuleNotFoundError:\n    pass\n"
        "import stackless\n"
    )
    assert dev_imports(tree) == [(1, "stack.stack"), (2, "tests.support"), (4, "bench"), (6, "soak")]


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_the_local_stack_commands_say_where_to_run_them_when_it_is_not_installed(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("stack", "stack.stack"):  # as in an installed tally: not importable
        monkeypatch.setitem(sys.modules, module, None)
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert f"tally {command}: the local stack is dev tooling, run from a checkout" in err
