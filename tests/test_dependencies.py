"""Dependencies point one way: firmware_bridge <- edge <- training <- export, read from the source itself.

Every module of firmware_bridge/, edge/ and training/ (subfolders included) is parsed and every import in it is checked,
wherever it sits: at the top, inside a function (a late import), under `try:` (an optional import), or as
`importlib.import_module("...")` / `__import__("...")` with a literal name. Each package may import the
standard library, itself, the packages below it and the third-party packages of its install extra
(pyproject.toml) and nothing else; there is no exception list. tests/test_no_torch.py checks the same
at run time (imports with computed names included).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from helpers import REPO

# Import names of the third-party packages each layer may use (pyproject.toml: dependencies, the edge extra).
BRIDGE_THIRD_PARTY = {"cobs", "serial"}  # cobs, pyserial
EDGE_THIRD_PARTY = BRIDGE_THIRD_PARTY | {
    "numpy", "scipy", "matplotlib", "onnxruntime",
    "ai_edge_litert", "tflite_runtime",  # LiteRT, or the older tflite-runtime wheel it falls back to
    "paho",  # paho-mqtt
}
TRAINING_THIRD_PARTY = EDGE_THIRD_PARTY | {"torch", "tqdm"}  # the dev extra's training half
ALLOWED = {
    "firmware_bridge": {"firmware_bridge"} | BRIDGE_THIRD_PARTY,
    "edge": {"edge", "firmware_bridge"} | EDGE_THIRD_PARTY,
    "training": {"training", "edge", "firmware_bridge"} | TRAINING_THIRD_PARTY,  # never export, the layer above
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a module of `package`, late and optional ones too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "" if node.level == 0 else f"{package}.{node.module or ''}"))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "id", None) == "__import__"
                   or getattr(node.func, "attr", None) == "import_module")):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(source: str, package: str, where: str) -> list[str]:
    allowed = ALLOWED[package] | set(sys.stdlib_module_names)
    return [f"{where}:{line} imports {name}" for line, name in imported_modules(source, package)
            if name.split(".")[0] not in allowed]


def modules_of(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_imports_only_what_lies_below_it(package):
    modules = modules_of(package)
    assert len(modules) >= 5, f"{package}/ has no modules to check: the scan reads the wrong folder"
    found = [v for path in modules for v in violations(path.read_text(), package, str(path.relative_to(REPO)))]
    assert found == [], f"{package} must not import these (dependencies point one way: docs/ARCHITECTURE.md): {found}"


def test_edge_never_imports_torch_not_even_lazily():
    for path in modules_of("edge"):
        names = {name.split(".")[0] for _, name in imported_modules(path.read_text(), "edge")}
        assert not names & {"torch", "training", "export", "tensorflow"}, path


def test_the_scan_catches_every_kind_of_import():
    """The check itself can fail: each way of importing a forbidden package is found."""
    source = '''
import json
from . import frontend
import numpy as np

def baseline():
    import torch
    from training.models import create_model
    try:
        from export import cli
    except ImportError:
        pass
    import importlib
    return importlib.import_module("tensorflow"), __import__("edge.pipeline")
'''
    assert violations(source, "edge", "m.py") == ["m.py:7 imports torch", "m.py:8 imports training.models",
                                                   "m.py:10 imports export", "m.py:14 imports tensorflow"]
    assert violations(source, "training", "t.py") == ["t.py:10 imports export", "t.py:14 imports tensorflow"]
    bridge = violations(source, "firmware_bridge", "b.py")
    assert "b.py:4 imports numpy" in bridge and "b.py:14 imports edge.pipeline" in bridge
    assert "b.py:3 imports firmware_bridge.frontend" not in bridge  # a relative import stays in its package
