"""The shape of the house: imports go one way, no script imports another, library modules never print.

Layers: scripts (the top-level ``*.py``, ``dataset/generate_lists.py``, ``bench/``, ``Evaluation/__main__.py``)
-> ``engine/`` -> ``models/``, ``data/``, ``Evaluation/`` -> ``configs.py``; ``utils.py`` imports nothing of ours but
``configs.py`` and every layer may use it, except ``models/``, which imports only ``configs.py``. Imports are read
with ``ast`` from every file, those inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "data", "Evaluation", "engine")
SCRIPTS = sorted(path.stem for path in REPO.glob("*.py") if path.stem not in ("configs", "utils"))
OURS = {"configs", "utils", "dataset", *PACKAGES, *SCRIPTS}
# What each layer may import of ours (besides itself).
ALLOWED = {
    "configs": set(),
    "utils": {"configs"},
    "models": {"configs"},
    "data": {"configs", "utils"},
    "Evaluation": {"configs", "utils", "data"},
    "engine": {"configs", "utils", "models", "data", "Evaluation"},
    "script": {"configs", "utils", "models", "data", "Evaluation", "engine", "dataset"},
}


def layer_of(relative: Path) -> str:
    """The layer of a file, by its path relative to the repository."""
    if relative.parts[0] in PACKAGES and relative.name != "__main__.py":
        return relative.parts[0]
    return relative.stem if relative.stem in ("configs", "utils") and len(relative.parts) == 1 else "script"


def imported(text: str, relative: Path) -> set[str]:
    """Top-level names of the project's modules that the source ``text`` of file ``relative`` imports (relative
    imports: its own package)."""
    names = set()
    for node in ast.walk(ast.parse(text, str(relative))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(relative.parts[0] if node.level else node.module.split(".")[0])
    return names & OURS


def forbidden_imports(text: str, relative: Path) -> set[str]:
    layer = layer_of(relative)
    if layer == "script":  # a script may import any layer, but never another script
        return imported(text, relative) & (set(SCRIPTS) - {relative.stem})
    return imported(text, relative) - ALLOWED[layer] - ({relative.parts[0]} if layer in PACKAGES else set())


def print_lines(text: str) -> list[int]:
    """Lines calling print() or sys.stdout/stderr.write()."""
    calls = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)]
    return [node.lineno for node in calls if isinstance(node.func, ast.Name) and node.func.id == "print"
            or isinstance(node.func, ast.Attribute) and node.func.attr == "write"
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in ("stdout", "stderr")]


SOURCES = sorted(p.relative_to(REPO) for p in REPO.rglob("*.py")
                 if not {".venv", "tests", ".git"} & set(p.relative_to(REPO).parts))


@pytest.mark.parametrize("relative", SOURCES, ids=str)
def test_imports_go_one_way(relative: Path) -> None:
    forbidden = forbidden_imports((REPO / relative).read_text(), relative)
    assert not forbidden, f"{relative} ({layer_of(relative)}) imports {sorted(forbidden)}"


@pytest.mark.parametrize("relative", [p for p in SOURCES if layer_of(p) != "script"], ids=str)
def test_library_modules_never_print(relative: Path) -> None:
    lines = print_lines((REPO / relative).read_text())
    assert not lines, f"{relative} prints at lines {lines}; library code logs"


def test_the_rules_can_fail() -> None:
    """The checks see what they must: a relative import, a function-level import of a script, a print."""
    text = "from .train import run\n\ndef f():\n    import predict\n    print(predict)\n"
    assert imported(text, Path("engine/probe.py")) == {"engine", "predict"}
    assert forbidden_imports(text, Path("engine/probe.py")) == {"predict"}
    assert forbidden_imports("import engine.train\n", Path("models/probe.py")) == {"engine"}
    assert forbidden_imports("import utils\n", Path("models/probe.py")) == {"utils"}
    assert forbidden_imports("import predict\n", Path("train_sod.py")) == {"predict"}
    assert forbidden_imports("import engine, models\n", Path("train_sod.py")) == set()
    assert print_lines(text) == [5] and print_lines("import sys\nsys.stderr.write('x')\n") == [2]


def test_utils_stays_small() -> None:
    assert len((REPO / "utils.py").read_text().splitlines()) <= 300


# Calls that change the whole process; ``Evaluation/evaluate.py`` sets the threads of the worker processes it starts.
PROCESS_WIDE = {"set_num_threads", "setNumThreads", "tune_process", "inference_device", "start_inference",
                "keep_freed_memory", "mallopt"}
WORKER_SETUP = {Path("Evaluation/evaluate.py"): {"set_num_threads", "setNumThreads"}}


def process_wide_calls(text: str) -> set[str]:
    """Names of process-wide calls in ``text``, and ``cudnn.benchmark`` if it is assigned."""
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            found |= {name} & PROCESS_WIDE
        elif isinstance(node, ast.Assign):
            found |= {"cudnn.benchmark" for target in node.targets
                      if isinstance(target, ast.Attribute) and target.attr == "benchmark"}
    return found


@pytest.mark.parametrize("relative", [p for p in SOURCES if layer_of(p) not in ("script", "utils")], ids=str)
def test_library_code_changes_nothing_process_wide(relative: Path) -> None:
    calls = process_wide_calls((REPO / relative).read_text()) - WORKER_SETUP.get(relative, set())
    assert not calls, f"{relative} calls {sorted(calls)}: only a script's main changes the process"


@pytest.mark.parametrize("script", ["generate_salmaps_sod", "generate_salmaps_vsod", "predict", "serve",
                                    "speed_sod", "speed_vsod"])
def test_inference_scripts_set_the_process_up_in_main(script: str) -> None:
    tree = ast.parse((REPO / f"{script}.py").read_text())
    [main] = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert process_wide_calls(ast.unparse(main)) & {"tune_process", "inference_device", "start_inference"}
    assert process_wide_calls("torch.backends.cudnn.benchmark = True\ntorch.set_num_threads(2)\n") == {
        "cudnn.benchmark", "set_num_threads"}


MODEL_FLAGS = {"--model", "--train-config", "--inference-config", "--bn", "--nobn"}
VIDEO_FLAGS = {"--tid", "--nframes"}
DEVICE_FLAGS = {"--gpu", "--backend", "--eager", "--precision", "--half", "--threads", "--cache-dir", "--no-cache"}


@pytest.mark.parametrize(("script", "present", "absent"), [
    ("convert", MODEL_FLAGS | VIDEO_FLAGS, DEVICE_FLAGS),
    ("export_onnx", MODEL_FLAGS | VIDEO_FLAGS, DEVICE_FLAGS),
    ("predict", MODEL_FLAGS | VIDEO_FLAGS | DEVICE_FLAGS, set()),
    ("generate_salmaps_sod", MODEL_FLAGS | DEVICE_FLAGS, VIDEO_FLAGS),
    ("generate_salmaps_vsod", MODEL_FLAGS | VIDEO_FLAGS | DEVICE_FLAGS, set()),
])
def test_each_script_takes_the_flags_it_uses_and_no_other(script: str, present: set, absent: set) -> None:
    import importlib

    parser = importlib.import_module(script).build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert present <= flags and not absent & flags, (sorted(present - flags), sorted(absent & flags))
