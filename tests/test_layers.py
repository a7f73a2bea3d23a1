"""Import contracts: the layer rules of docs/architecture.md, checked on every module under ``xserve/``.

An AST walk (every ``import`` and ``from ... import``, including imports inside
functions and relative ones) rather than import-linter, so the rules read as
plain Python and apply to packages added later without editing a config:

* ``xserve.pipeline`` imports only the standard library and itself;
* ``ray`` only in ``xserve/actors/``, ``xserve/deployments/`` and ``xserve/app.py``;
* ``lancedb`` only in ``xserve/storage/``;
* ``torch`` never in ``pipeline``, ``mixer``, ``thunder``, ``posts``, ``users``, ``storage`` (nor schema, config, sharding, clock);
* lower layers never import higher ones (``LAYERS``); a new top-level module
  must be given a layer here before it can be imported from a lower one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# top-level module or package of xserve -> layer; lower never imports higher
LAYERS = {
    "schema": 0, "config": 0, "sharding": 0, "clock": 0,
    "pipeline": 1,
    "mixer": 2, "thunder": 2, "phoenix": 2, "storage": 2, "synth": 2,
    "retrieval": 2, "users": 2, "posts": 2, "loop": 2, "ads": 2,
    "actors": 3, "deployments": 3,
    "app": 4,
    "cli": 5, "__main__": 5,
}
RAY_ALLOWED = ("actors", "deployments", "app")
LANCEDB_ALLOWED = ("storage",)
TORCH_FORBIDDEN = ("schema", "config", "sharding", "clock", "pipeline", "mixer", "thunder", "posts", "users", "storage",
                   "loop")


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (module name ``module``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            if name in ("xserve", "xserve.pipeline"):  # `from xserve import mixer` imports xserve.mixer
                for alias in node.names:
                    yield node.lineno, f"{name}.{alias.name}"


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root/xserve``, as 'path:line: message'."""
    found: list[str] = []
    for path in sorted((root / "xserve").rglob("*.py")):
        rel = path.relative_to(root)
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        parts = module.split(".")
        top = parts[1] if len(parts) > 1 else "__init__"
        for line, name in imports(path, module):
            first = name.split(".")[0]
            where = f"{rel}:{line}: {module} imports {name}"
            if top == "pipeline" and not (name.startswith("xserve.pipeline") or first in sys.stdlib_module_names):
                found.append(f"{where} (xserve.pipeline may import only the standard library)")
            if first == "ray" and top not in RAY_ALLOWED:
                found.append(f"{where} (ray only in {', '.join(RAY_ALLOWED)})")
            if first == "lancedb" and top not in LANCEDB_ALLOWED:
                found.append(f"{where} (lancedb only in storage)")
            if first == "torch" and top in TORCH_FORBIDDEN:
                found.append(f"{where} (no torch in {top})")
            if first == "xserve" and len(name.split(".")) > 1 and top != "__init__":
                target = name.split(".")[1]
                if target == top:
                    continue
                if top not in LAYERS or target not in LAYERS:
                    unknown = top if top not in LAYERS else target
                    found.append(f"{where} (give xserve.{unknown} a layer in tests/test_layers.py LAYERS)")
                elif LAYERS[target] > LAYERS[top]:
                    found.append(f"{where} (layer {LAYERS[top]} must not import layer {LAYERS[target]})")
    return found


def test_xserve_respects_the_layer_rules():
    assert violations(REPO) == []


def test_the_checker_catches_each_kind_of_violation(tmp_path: Path):
    files = {
        "xserve/__init__.py": "",
        "xserve/schema.py": "import msgspec\n",
        "xserve/pipeline/__init__.py": "from .stages import x\nimport msgspec\n",
        "xserve/pipeline/stages.py": "import asyncio\nfrom ..schema import Post\n",
        "xserve/mixer/filters.py": "import xserve.pipeline\ndef f():\n    import ray\n    from xserve.actors import a\n",
        "xserve/thunder/store.py": "import torch.nn\nfrom xserve import app\n",
        "xserve/phoenix/model/ranker.py": "import torch\nimport lancedb\n",
        "xserve/storage/lance/tables.py": "import lancedb\nfrom xserve.newthing import y\n",
        "xserve/actors/thunder.py": "import ray\nfrom xserve.thunder.store import S\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    expected = [
        "xserve/mixer/filters.py:3: xserve.mixer.filters imports ray (ray only",
        "xserve/mixer/filters.py:4: xserve.mixer.filters imports xserve.actors (layer 2 must not import layer 3)",
        "xserve/phoenix/model/ranker.py:2: xserve.phoenix.model.ranker imports lancedb (lancedb only in storage)",
        "xserve/pipeline/__init__.py:2: xserve.pipeline imports msgspec (xserve.pipeline may import only",
        "xserve/pipeline/stages.py:2: xserve.pipeline.stages imports xserve.schema (xserve.pipeline may import only",
        "xserve/storage/lance/tables.py:2: xserve.storage.lance.tables imports xserve.newthing (give xserve.newthing a layer",
        "xserve/thunder/store.py:1: xserve.thunder.store imports torch.nn (no torch in thunder)",
        "xserve/thunder/store.py:2: xserve.thunder.store imports xserve.app (layer 2 must not import layer 4)",
    ]
    assert len(found) == len(expected), "\n".join(found)
    for line, prefix in zip(found, expected):
        assert line.startswith(prefix), (line, prefix)
