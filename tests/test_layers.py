"""The layers import one way: models <- stream <- research <- server <- api. A module may import from its
own layer or those to its left, never from one to its right (function-level imports included). `api` is
the folder of the root package `cliplive` (the public Python API): `import cliplive.x` names layer x,
while `from cliplive import y` names the API itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"models": 0, "stream": 1, "research": 2, "server": 3, "api": 4}  # folder -> rank
ROOT_PACKAGE = "api"  # what `cliplive` itself (no subpackage) is


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
            target = parts[1] if len(parts) > 1 else ROOT_PACKAGE
            if isinstance(node, ast.ImportFrom) and len(parts) == 1:  # from cliplive import stream / summarize
                target = next((a.name for a in node.names if a.name in LAYERS), ROOT_PACKAGE)
            if parts[0] == "cliplive" and LAYERS.get(target, -1) > LAYERS[layer]:
                found.append(f"{filename}:{node.lineno} imports {name}")
    return found


def test_no_layer_imports_from_a_layer_to_its_right():
    wrong = [
        line
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line in wrong_imports(path.read_text(), layer, str(path.relative_to(ROOT)))
    ]
    assert not wrong, "imports against the layers (models <- stream <- research <- server <- api):\n" + "\n".join(wrong)


def test_every_package_folder_is_a_checked_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "benchmarks")}
    assert packages == set(LAYERS), "a package folder the layer check does not know"
    assert any((ROOT / ROOT_PACKAGE).rglob("*.py")), "the root API package is checked too"


def test_the_check_reports_imports_to_the_right_and_only_those():
    source = "from cliplive.stream.shots import x\n\ndef f():\n    import cliplive.server.cli\n    from cliplive.models import y\n"
    assert wrong_imports(source, "models", "models/m.py") == [
        "models/m.py:1 imports cliplive.stream.shots",
        "models/m.py:4 imports cliplive.server.cli",
    ]
    assert wrong_imports(source, "server") == []
    assert wrong_imports("from cliplive.research import protocol\n", "stream") == ["<source>:1 imports cliplive.research"]
    # The root package is the top layer: no layer may import it; it may import any layer.
    assert wrong_imports("import cliplive\nfrom cliplive import summarize\n", "server") == [
        "<source>:1 imports cliplive", "<source>:2 imports cliplive"]
    assert wrong_imports("from cliplive import stream\n", "models") == ["<source>:1 imports cliplive"]
    assert wrong_imports("from cliplive.server import cli\nimport cliplive.stream.summarize\n", "api") == []
