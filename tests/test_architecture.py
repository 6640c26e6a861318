"""The layering rules of ARCHITECTURE.md that import-linter cannot express, and start-up cost."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import emotionclip

PACKAGE = Path(emotionclip.__file__).parent
STAGES = ("prepare", "train", "evaluate", "analyze")


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _front_imports(path: Path) -> list[str]:
    """``import emotionclip`` / ``from emotionclip import X`` / ``from .. import X`` (the package front)."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1  # package levels below emotionclip/
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "emotionclip" for a in node.names):
            found.append(f"{path.name}:{node.lineno} import emotionclip")
        if isinstance(node, ast.ImportFrom):
            absolute_front = node.level == 0 and node.module == "emotionclip"
            relative_front = (
                node.level == depth + 1
                and node.module is None
                and any(not _is_submodule(a.name) for a in node.names)
            )
            if absolute_front or relative_front:
                found.append(
                    f"{path.name}:{node.lineno} from {'.' * node.level}{node.module or ''} import ..."
                )
    return found


def test_stages_do_not_import_the_package_front():
    offenders = [
        hit for stage in STAGES for f in (PACKAGE / stage).rglob("*.py") for hit in _front_imports(f)
    ]
    assert offenders == []


def test_front_check_sees_a_front_import(tmp_path, monkeypatch):
    bad = PACKAGE / "train" / "_probe_front_import.py"
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        bad.write_text("from .. import load_model\nimport emotionclip\n")
        assert len(_front_imports(bad)) == 2
    finally:
        bad.unlink()


def _fresh_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout.strip()


def test_import_and_cli_help_do_not_load_open_clip():
    code = (
        "import sys, emotionclip, emotionclip.cli as c\n"
        "p = c.build_parser()\n"
        "print(sorted(m for m in ('open_clip', 'torchvision', 'transformers', 'torch') if m in sys.modules))"
    )
    assert _fresh_python(code) == "[]"


# ---------------------------------------------------------------- the layer table is the contract

ROOT = Path(__file__).resolve().parents[1]


def _doc_layers() -> tuple[set[str], set[str]]:
    """``(top, core)`` module names from ARCHITECTURE.md's layer diagram: the lines above the first
    rule (``cli.py, export_cli.py ...``) and the ``core:`` list with its continuation lines."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("## Layers", 1)[1].split("```")[1]
    top_lines, _, rest = block.partition("───")
    top = {
        m.removesuffix(".py") for line in top_lines.splitlines() for m in re.findall(r"\b[\w]+\.py\b", line)
    }
    core_text = rest[rest.index("core:") + len("core:") :]
    core = {name.strip().rstrip("/") for name in core_text.replace("\n", " ").split(",") if name.strip()}
    return top, core


def _modules_on_disk() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return names | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def _forbidden_contract_sources() -> set[str]:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c["type"] == "forbidden"]
    return {m.removeprefix("emotionclip.") for m in core["source_modules"]}


def test_every_module_has_a_layer_and_the_core_contract_lists_the_core():
    top, core = _doc_layers()
    on_disk = _modules_on_disk()
    assert core and top >= {"cli", "demo"}
    assert on_disk - set(STAGES) - top - core == set(), "modules missing from ARCHITECTURE.md's layers"
    assert (top | core) - on_disk == set(), "ARCHITECTURE.md names modules that do not exist"
    assert _forbidden_contract_sources() == core, "pyproject's core contract differs from ARCHITECTURE.md"


def test_layer_check_sees_a_forgotten_core_module(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    probe = PACKAGE / "_probe_forgotten.py"
    try:
        probe.write_text("")
        top, core = _doc_layers()
        assert "_probe_forgotten" in _modules_on_disk() - set(STAGES) - top - core
    finally:
        probe.unlink()
