"""The layout shows the architecture: a Dagster-free core whose import changes nothing, and a
command-line client that shares the core's constants but neither the API nor the code location."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import export_core
from export_core.settings import REPO_ROOT

CHECK = """
import importlib, json, os, pkgutil, sys
import polars, pyarrow  # polars sets its own allocator variable when it loads: that is polars', not ours
FORBIDDEN = ("dagster", "export_pipelines", "export_api", "export_cli", "starlette")
before = dict(os.environ)
import export_core
for module in pkgutil.iter_modules(export_core.__path__):
    importlib.import_module(f"export_core.{module.name}")
print(json.dumps({
    "environ_changed": sorted(set(os.environ.items()) ^ set(before.items())),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN),
}))
"""


def test_importing_the_core_changes_nothing_and_loads_no_dagster():
    modules = [m.name for m in pkgutil.iter_modules(export_core.__path__)]
    assert {"settings", "records", "export_types", "plan", "keys", "csv_format", "ccpa"} <= set(modules)
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"environ_changed": [], "loaded": []}


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_the_command_line_client_is_not_part_of_the_server_packages():
    assert not {"export_api", "export_pipelines", "dagster", "starlette"} & _imported_packages("export_cli")
    assert "export_cli" not in _imported_packages("export_api") | _imported_packages("export_pipelines")


def test_the_core_imports_neither_the_code_location_nor_the_api():
    assert not {"export_api", "export_pipelines", "export_cli", "dagster"} & _imported_packages("export_core")
    assert "export_pipelines" not in _imported_packages("export_api")


def test_no_module_of_the_code_location_is_left_where_the_core_now_lives():
    assert not Path(REPO_ROOT / "export_pipelines" / "domain").exists()
