"""The project uses only the public API of pymongo, bson and pymongoarrow.

Their private parts (a leading `_`) change without notice between releases, so an upgrade of the
pinned driver could break the engine silently. Every module of the project is parsed (`ast`) and
any import of a private name or module of those packages, any private attribute reached from
something imported from them, and any subclass of their classes that defines a private method
(an override of their internals) is reported with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from export_core.settings import REPO_ROOT

GUARDED = frozenset({"pymongo", "bson", "pymongoarrow", "gridfs"})
PROJECT_PACKAGES = ("export_pipelines", "export_api", "devstack", "bench")


def _private(name: str) -> bool:
    """`_x` is private; `__x__` (dunders such as `__version__`, `__init__`) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _guarded_module(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in GUARDED


def _chain(node: ast.expr) -> tuple[str | None, list[str]]:
    """`a.b.c` → ("a", ["b", "c"]); (None, ...) when the chain does not start at a plain name."""
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.insert(0, node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), attributes


def private_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every use of a private name of the guarded packages in `source`, as `file:line: what`."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    guarded_names: set[str] = set()  # local names bound to a guarded module or to something from one

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _guarded_module(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        report(node, f"import {alias.name}")
                    guarded_names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and _guarded_module(node.module):
            assert node.module is not None
            if any(_private(part) for part in node.module.split(".")):
                report(node, f"from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    report(node, f"from {node.module} import {alias.name}")
                guarded_names.add(alias.asname or alias.name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base, attributes = _chain(node)
            # Each chain once, at its first private part (`bson._x._y` is `bson._x`).
            if base in guarded_names and _private(node.attr) and not any(map(_private, attributes[:-1])):
                report(node, f"{base}.{'.'.join(attributes)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr"):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                base, _ = _chain(node.args[0])
                if base in guarded_names and _private(node.args[1].value):
                    report(node, f"{node.func.id}({base}, {node.args[1].value!r})")
        elif isinstance(node, ast.ClassDef):
            bases = [_chain(b.value if isinstance(b, ast.Subscript) else b)[0] for b in node.bases]
            if any(b in guarded_names for b in bases):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                        report(item, f"class {node.name} overrides {item.name}")
    return found


def project_modules() -> list[Path]:
    return sorted(
        path
        for package in PROJECT_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if "node_modules" not in path.parts
    )


def test_no_module_of_the_project_uses_a_private_name_of_pymongo_bson_or_pymongoarrow() -> None:
    modules = project_modules()
    assert len(modules) > 20 and any(p.name == "sources.py" for p in modules), "the project's modules were found"
    found = [use for path in modules for use in private_uses(path.read_text(), str(path.relative_to(REPO_ROOT)))]
    assert found == [], "private APIs in use:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from bson import _array_of_documents_to_buffer",
        "from bson import decode as _d, _dict_to_bson",
        "import bson\nbson._decode_all_selective(b'', None, None)",
        "import bson as b\nx = b._ENCODERS",
        "from pymongo.cursor import RawBatchCursor\nclass C(RawBatchCursor):\n    def _unpack_response(self): ...",
        "from pymongo import cursor\nclass C(cursor.RawBatchCursor[dict]):\n    def _refresh(self): ...",
        "from pymongo.synchronous import cursor\ncursor.RawBatchCursor._unpack_response",
        "from pymongo import MongoClient\nMongoClient._topology",
        "import pymongo._csot",
        "from pymongoarrow.lib import _something",
        "from bson._cbson import decode",
        "import pymongoarrow.context\npymongoarrow.context.PyMongoArrowContext._private",
        "import bson\ngetattr(bson, '_array_of_documents_to_buffer')",
    ],
)
def test_each_kind_of_private_use_is_found(source: str) -> None:
    assert private_uses(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import bson\nbson.decode_all(b'')\nbson.__version__",
        "from pymongo import monitoring\nclass L(monitoring.CommandListener):\n    def started(self, e): ...\n"
        "    def __init__(self): self._mine = 0",
        "from pymongoarrow.context import PyMongoArrowContext\nPyMongoArrowContext(None).process_bson_stream(b'')",
        "import polars as pl\npl._private_but_not_guarded",
        "class Mine:\n    def _helper(self): ...",
    ],
)
def test_public_uses_and_other_packages_are_not_reported(source: str) -> None:
    assert private_uses(source) == [], source
