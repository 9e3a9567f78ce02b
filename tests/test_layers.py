"""The layers import one way: models <- stream <- research <- server. A module may import from its own
layer or those to its left, never from one to its right (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"models": 0, "stream": 1, "research": 2, "server": 3}


def wrong_imports(source: str, layer: str, filename: str = "<source>") -> list[str]:
    """`file:line imports X` for every import in `source` (a module of `layer`) of a layer to its right."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cliplive" and len(parts) > 1 and LAYERS.get(parts[1], -1) > LAYERS[layer]:
                found.append(f"{filename}:{node.lineno} imports {name}")
    return found


def test_no_layer_imports_from_a_layer_to_its_right():
    wrong = [
        line
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line in wrong_imports(path.read_text(), layer, str(path.relative_to(ROOT)))
    ]
    assert not wrong, "imports against the layers (models <- stream <- research <- server):\n" + "\n".join(wrong)


def test_the_check_reports_imports_to_the_right_and_only_those():
    source = "from cliplive.stream.shots import x\n\ndef f():\n    import cliplive.server.cli\n    from cliplive.models import y\n"
    assert wrong_imports(source, "models", "models/m.py") == [
        "models/m.py:1 imports cliplive.stream.shots",
        "models/m.py:4 imports cliplive.server.cli",
    ]
    assert wrong_imports(source, "server") == []
    assert wrong_imports("from cliplive.research import protocol\n", "stream") == ["<source>:1 imports cliplive.research"]
