"""The shape of the house: imports go one way, no script imports another, library modules never print.

Layers: scripts (the top-level ``*.py``, ``dataset/generate_lists.py``, ``bench/``, ``Evaluation/__main__.py``)
-> ``engine/`` -> ``models/``, ``data/``, ``Evaluation/`` -> ``configs.py``; ``utils.py`` imports nothing of ours but
``configs.py`` and every layer may use it, except ``models/``, which imports only ``configs.py``. Inside ``engine/``,
the training and inference wings never import each other, serving stands on inference, and the shared floor imports
no wing. Imports are read with ``ast`` from every file, those inside functions included.
"""

from __future__ import annotations

import argparse
import ast
import re
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
    assert forbidden_imports("import engine.training.loop\n", Path("models/probe.py")) == {"engine"}
    assert forbidden_imports("import utils\n", Path("models/probe.py")) == {"utils"}
    assert forbidden_imports("import predict\n", Path("train_sod.py")) == {"predict"}
    assert forbidden_imports("import engine, models\n", Path("train_sod.py")) == set()
    assert print_lines(text) == [5] and print_lines("import sys\nsys.stderr.write('x')\n") == [2]


# Inside engine/: three wings on a shared floor. A wing may import the floor and what it stands on; the floor imports
# no wing. Training and inference never import each other; serving stands on inference.
WINGS = ("training", "inference", "serving")
WING_MAY_IMPORT = {"training": set(), "inference": set(), "serving": {"inference"}, "floor": set()}


def wing_of(relative: Path) -> str:
    """'training', 'inference' or 'serving' for a module of that wing of engine/, else 'floor'."""
    return relative.parts[1] if len(relative.parts) > 2 and relative.parts[1] in WINGS else "floor"


def wings_imported(text: str, relative: Path) -> set[str]:
    """The wings of engine/ that the source ``text`` of engine file ``relative`` imports (relative imports
    resolved against its package)."""
    found = set()
    package = list(relative.parent.parts)
    for node in ast.walk(ast.parse(text, str(relative))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            modules = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "engine" and len(parts) > 1 and parts[1] in WINGS:
                found.add(parts[1])
    return found


ENGINE_SOURCES = [p for p in SOURCES if p.parts[0] == "engine"]


@pytest.mark.parametrize("relative", ENGINE_SOURCES, ids=str)
def test_engine_wings_do_not_import_each_other(relative: Path) -> None:
    wing = wing_of(relative)
    forbidden = wings_imported((REPO / relative).read_text(), relative) - {wing} - WING_MAY_IMPORT[wing]
    assert not forbidden, f"{relative} ({wing}) imports the wing(s) {sorted(forbidden)}"


def test_the_wing_rules_can_fail() -> None:
    assert wings_imported("from engine.inference import runner\n", Path("engine/training/loop.py")) == {"inference"}
    assert wings_imported("from ..inference.runner import x\n", Path("engine/serving/app.py")) == {"inference"}
    assert wings_imported("from engine import training\n", Path("engine/hub.py")) == {"training"}
    assert wings_imported("import engine.hardware\n", Path("engine/training/step.py")) == set()
    assert wing_of(Path("engine/hardware.py")) == "floor" and wing_of(Path("engine/inference/backends/eager.py")) == \
        "inference"
    assert sorted(path.name for path in (REPO / "engine").iterdir() if path.is_dir() and path.name != "__pycache__"
                  ) == sorted(WINGS)


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
INT8_FLAGS = {"--precision", "--calibration", "--gate", "--gate-tolerance"}  # export_onnx.py ships int8 networks too
DEVICE_FLAGS = {"--gpu", "--backend", "--eager", "--half", "--threads", "--cache-dir", "--no-cache"} | INT8_FLAGS


@pytest.mark.parametrize(("script", "present", "absent"), [
    ("convert", MODEL_FLAGS | VIDEO_FLAGS, DEVICE_FLAGS),
    ("export_onnx", MODEL_FLAGS | VIDEO_FLAGS | INT8_FLAGS, DEVICE_FLAGS - INT8_FLAGS),
    ("predict", MODEL_FLAGS | VIDEO_FLAGS | DEVICE_FLAGS, set()),
    ("generate_salmaps_sod", MODEL_FLAGS | DEVICE_FLAGS, VIDEO_FLAGS),
    ("generate_salmaps_vsod", MODEL_FLAGS | VIDEO_FLAGS | DEVICE_FLAGS, set()),
])
def test_each_script_takes_the_flags_it_uses_and_no_other(script: str, present: set, absent: set) -> None:
    import importlib

    parser = importlib.import_module(script).build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    assert present <= flags and not absent & flags, (sorted(present - flags), sorted(absent & flags))


def test_every_test_the_code_names_exists() -> None:
    """A docstring or comment naming ``tests/<file>.py`` (or ``tests/<file>.py::<test>``) names a file (and a test
    function) that exists: a renamed test leaves no stale pointer behind."""
    missing = []
    for relative in SOURCES:
        for file, test in re.findall(r"tests/(\w+\.py)(?:::(\w+))?", (REPO / relative).read_text()):
            target = REPO / "tests" / file
            if not target.is_file() or test and not re.search(rf"^def {test}\(", target.read_text(), re.M):
                missing.append(f"{relative}: tests/{file}{'::' + test if test else ''}")
    assert not missing, missing



@pytest.mark.parametrize("script", ["train_sod", "train_vsod", "predict", "generate_salmaps_sod",
                                    "generate_salmaps_vsod", "Evaluation.__main__"])
def test_workers_means_data_reading_processes_everywhere(script: str) -> None:
    """-j / --workers is one thing in every script: the processes that read and decode data (0: none, in the
    script's own process). serve.py's server processes are --processes (--workers there is a hidden alias)."""
    import importlib

    parser = importlib.import_module(script).build_parser()
    actions = [action for action in parser._actions if "--workers" in action.option_strings]
    for subparsers in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        actions += [action for sub in subparsers.choices.values() for action in sub._actions
                    if "--workers" in action.option_strings]
    assert actions and all(action.option_strings == ["-j", "--workers"] and "process" in action.help
                           and action.type("0") == 0 for action in actions), script
    serve = importlib.import_module("serve").build_parser()
    [alias] = [action for action in serve._actions if "--workers" in action.option_strings]
    assert alias.dest == "processes" and alias.help == argparse.SUPPRESS


def test_every_requirement_is_pinned() -> None:
    """requirements*.txt pin every package to one version (==): a fresh machine a year on installs what the suite
    passed with, and OpenCV's resize or Pillow's decoder cannot change a map's bytes behind our back."""
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines = [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines()]
        requirements = [line for line in lines if line]
        assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.+]*", line) for line in
                                    requirements), (name, requirements)
