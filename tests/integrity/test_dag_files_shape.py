"""DAG files read as diagrams: one builder signature, context injected by TaskFlow, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("model_*.py"))
MAX_FUNCTION_LINES = 60


def _functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_one_builder_signature(path: Path) -> None:
    builders = [f for f in _functions(path) if f.name.startswith("build_") and f.name.endswith("_dag")]
    assert len(builders) == 1, path.name
    (builder,) = builders
    args = builder.args
    assert [a.arg for a in args.args] == ["cfg"] and not args.kwonlyargs and not args.vararg, path.name
    assert ast.unparse(args.args[0].annotation) == "ModelConfig" and ast.unparse(builder.returns) == "DAG"  # type: ignore[arg-type]
    assert f'generate_dags(globals(), "{path.stem.removeprefix("model_")}", {builder.name})' in path.read_text()


@pytest.mark.parametrize("path", [*DAG_FILES, *sorted((REPO / "include").rglob("*.py"))], ids=str)
def test_context_is_injected_not_fetched(path: Path) -> None:
    assert "get_current_context" not in path.read_text(), path


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_no_long_functions_in_dag_files(path: Path) -> None:
    long = {
        f.name: f.end_lineno - f.lineno + 1
        for f in _functions(path)
        if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    }  # type: ignore[operator]
    assert not long, f"{path.name}: {long}"
