"""The package's layers, read from its source: every import points down, none closes a cycle, and
no module reaches into another's private names.

The layers, bottom to top (README, "Layout"): ``_core`` < ``_kernels`` < ``_losses`` <
``_autodiff`` < ``_api`` < the public modules (``logitloss``, ``logitloss.torch``,
``logitloss.keras``) < ``_tools`` < the command line (``logitloss.cli``,
``logitloss.__main__``). Imports inside functions count: a lazy import that closes a cycle is
still a cycle to the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import logitloss

PACKAGE = Path(logitloss.__file__).parent
LAYERS = [
    ("logitloss._core",),
    ("logitloss._kernels",),
    ("logitloss._losses",),
    ("logitloss._autodiff",),
    ("logitloss._api",),
    ("logitloss", "logitloss.torch", "logitloss.keras"),
    ("logitloss._tools",),
    ("logitloss.cli", "logitloss.__main__"),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    for rank, prefixes in reversed(list(enumerate(LAYERS))):
        if any(module == p or (p != "logitloss" and module.startswith(p + ".")) for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README")


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports:
    """The package modules one module imports, and its uses of other modules' private names."""

    def __init__(self, module: str, source: str | None = None) -> None:
        tree = ast.parse(MODULES[module].read_text() if source is None else source)
        self.targets: set[str] = set()
        self.private: list[str] = []
        aliases: dict[str, str] = {}  # local name -> package module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        self.targets.add(alias.name)
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                if source.split(".")[0] != "logitloss":
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in MODULES:
                        self.targets.add(submodule)
                        aliases[alias.asname or alias.name] = submodule
                    else:
                        self.targets.add(source)
                        if _is_private(alias.name):
                            self.private.append(f"from {source} import {alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _is_private(node.attr)
            ):
                self.private.append(f"{aliases[node.value.id]}.{node.attr}")
        self.targets.discard(module)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


IMPORTS = {module: _Imports(module) for module in MODULES}


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = [t for t in sorted(IMPORTS[module].targets) if _layer(t) > _layer(module)]
    assert not upward, f"{module} (layer {_layer(module)}) imports from above: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_crosses_a_module(module: str) -> None:
    assert not IMPORTS[module].private, f"{module} uses private names: {IMPORTS[module].private}"


def _cyclic(graph: dict[str, set[str]]) -> list[str]:
    """The modules on a cycle: drop, again and again, those that import nothing left and those
    nothing left imports."""
    remaining = {m: set(targets) & set(graph) for m, targets in graph.items()}
    while True:
        imported = set().union(*remaining.values())
        ends = [m for m, targets in remaining.items() if not targets or m not in imported]
        if not ends:
            return sorted(remaining)
        for module in ends:
            del remaining[module]
        for targets in remaining.values():
            targets.difference_update(ends)


def test_no_import_cycle() -> None:
    cyclic = _cyclic({m: IMPORTS[m].targets for m in MODULES})
    assert not cyclic, f"import cycles among: {cyclic}"


def test_the_checks_can_fail() -> None:
    """The same readers flag a planted upward import, a private name and a cycle."""
    planted = _Imports(
        "logitloss._core.arrays",
        "from .. import _losses\nfrom .._api import dispatch\nx = _losses._secret\n",
    )
    assert planted.private == ["logitloss._losses._secret"]
    assert max(_layer(t) for t in planted.targets) > _layer("logitloss._core.arrays")
    assert _cyclic({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]
    assert _cyclic({"a": {"b"}, "b": set()}) == []


def _readme_section(title: str) -> str:
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    start = readme.index(f"\n{title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else len(readme)]


def test_readme_layout_names_every_module() -> None:
    """The README's tree and its "adding a loss" list name files that exist, and every module."""
    import re

    section = _readme_section("## Layout")
    named = set(re.findall(r"([A-Za-z_]\w*)\.py\b", section))
    root = PACKAGE.parents[1]
    files = {
        p.stem for d in ("src", "tests", "benchmarks", "examples") for p in (root / d).rglob("*.py")
    }
    assert not named - files, f"the README's Layout names files that do not exist: {named - files}"
    modules = {p.stem for p in PACKAGE.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    unnamed = {m for m in modules if not re.search(rf"\b{m}\b", section)}
    assert not unnamed, f"modules the README's Layout does not name: {sorted(unnamed)}"
    for path in re.findall(r"`(src/logitloss/[^`]+\.py)`", section):
        concrete = path.replace("<family>", "logistic").replace("<loss>", "tf_nn")
        assert (PACKAGE.parents[1] / concrete).exists(), path
