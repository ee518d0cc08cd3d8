"""The package's layout is its architecture: folders by concern, imports that only run downwards.

Parsed, not imported: every ``import`` and ``from ... import`` in ``appliance/`` (at module level, in
functions and under ``TYPE_CHECKING`` alike, since each is a dependency) is mapped to the folder or
top-level module it names. A folder may use a folder of a lower layer or of its own; an import that
runs up a layer, or a circle between folders, fails here with the file and line that made it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "appliance"

# Lowest first. A unit is a folder of appliance/ or a module at its top; "appliance" is the package's
# own __init__ (the version).
LAYERS: list[set[str]] = [
    {"appliance", "config", "durable", "passwords"},  # what every part shares: settings, safe writes, login hashes
    {"camera_backends", "motion", "arming"},      # sources of frames, what is seen in them; armed or not
    {"capture", "h264", "detection"},  # the capture thread; the one H.264 encode; objects on their own thread
    {"history"},                                  # events, snapshots and clips on disk
    {"state", "dispatch", "controller", "health"},  # the one owner of on/off and its news
    {"web", "mqtt", "panel", "rtsp", "mse", "onvif", "recording", "notify"},  # the controller's callers and listeners
    {"app", "runtime", "__main__"},               # what builds and wires the rest
]
LAYER = {unit: number for number, units in enumerate(LAYERS) for unit in units}

# Modules that import no OpenCV or numpy: the listeners and the tests use them
# without the image stack (tests/test_faults.py also checks the first of these at run time).
PURE = ["appliance.config", "appliance.durable", "appliance.state", "appliance.motion.events",
        "appliance.panel.button", "appliance.mqtt.discovery", "appliance.mqtt.topics", "appliance.passwords"]
IMAGE_STACK = {"cv2", "numpy", "simplejpeg", "picamera2"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int
    module_level: bool  # runs when the source is imported (not in a function, not type-only)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_in(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    source = module_name(path)
    lazy: set[int] = set()  # ids of import nodes inside functions or `if TYPE_CHECKING:`
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            lazy.update(id(inner) for inner in ast.walk(node) if inner is not node or isinstance(node, ast.If))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno, id(node) not in lazy)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package_of(path).split(".")
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"  # `from appliance.web import api` imports a module
                is_module = (ROOT / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT / candidate.replace(".", "/") / "__init__.py").exists()
                yield Import(source, candidate if is_module else base, node.lineno, id(node) not in lazy)


def all_imports() -> list[Import]:
    return [found for path in sorted(PACKAGE.rglob("*.py")) for found in imports_in(path)]


def unit_of(module: str) -> str | None:
    """The folder or top-level module of an appliance module; None for anything outside the package."""
    parts = module.split(".")
    if parts[0] != "appliance":
        return None
    return parts[1] if len(parts) > 1 else "appliance"


def test_every_folder_and_top_level_module_has_a_layer() -> None:
    units = {path.stem for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    units |= {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    units.add("appliance")
    assert units == set(LAYER), "a new folder or module needs its place in LAYERS (and in docs/architecture.md)"


def test_the_top_of_the_package_is_folders_and_a_few_modules_that_tie_them() -> None:
    modules = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert len(modules) <= 10, modules
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring.split()) >= 12, f"{init.relative_to(ROOT)} must say what it owns"


def test_imports_run_downwards_only() -> None:
    upward = []
    for found in all_imports():
        source, target = unit_of(found.source), unit_of(found.target)
        if source is None or target is None or source == target:
            continue
        if LAYER[target] > LAYER[source]:
            upward.append(f"{found.source} (line {found.line}) imports {found.target}: "
                          f"{source} is in layer {LAYER[source]}, {target} in {LAYER[target]}")
    assert upward == []


def test_no_circle_between_folders_or_modules() -> None:
    found = all_imports()
    units: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}
    for each in found:
        source, target = unit_of(each.source), unit_of(each.target)
        if source and target and source != target:
            units.setdefault(source, set()).add(target)
        if each.module_level and target and each.target != each.source:
            modules.setdefault(each.source, set()).add(each.target)
    for graph, what in ((units, "folders"), (modules, "modules")):
        try:
            tuple(TopologicalSorter(graph).static_order())
        except CycleError as exc:
            circle = " imports ".join(reversed(exc.args[1]))  # graphlib lists a node before what it needs
            raise AssertionError(f"circular imports between {what}: {circle}") from None


def test_pure_modules_stay_free_of_the_image_stack() -> None:
    """Followed through every module-level import inside the package, as Python would load them."""
    found = all_imports()
    edges: dict[str, set[str]] = {}
    for each in found:
        if each.module_level:
            edges.setdefault(each.source, set()).add(each.target)
    for pure in PURE:
        seen, todo, heavy = set(), [pure], []
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            for target in edges.get(module, ()):
                if target.split(".")[0] in IMAGE_STACK:
                    heavy.append(f"{module} imports {target}")
                elif target.startswith("appliance"):
                    parts = target.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ first
                    todo.extend(".".join(parts[:n]) for n in range(1, len(parts) + 1))
                    if (ROOT / target.replace(".", "/") / "__init__.py").exists():
                        todo.append(target)
        assert heavy == [], f"{pure} pulls in the image stack: {heavy}"


def test_the_checker_sees_what_it_must() -> None:
    """The parser is right about the shapes it meets: relative, from-package, lazy and type-only."""
    found = {(each.source, each.target): each for each in all_imports()}
    assert ("appliance.app", "appliance.web.api") in found  # `from appliance.web import api, ...`
    assert not found[("appliance.__main__", "appliance.runtime")].module_level  # imported in a function
    assert not found[("appliance.state", "appliance.motion.events")].module_level  # under TYPE_CHECKING
    assert found[("appliance.capture.pipeline", "appliance.motion.detector")].module_level
