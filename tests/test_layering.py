"""The package's layering: every import between gmem modules (module level or inside a function) points down or
sideways in `LAYERS`, never up, and the import graph has no circle. The README's "What is inside" table states the
same layers (checked below), so this dict is the one place they are declared."""
import ast, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module -> layer. An import may point to a lower layer or to the same layer (never up), and no circle is allowed.
LAYERS = {
    # core: the paper's math and shared helpers; imports nothing else of gmem
    "utils": 0, "paper": 0, "bank": 0, "model": 0, "loss": 0, "samplers": 0,
    # components: data, encoders, tokenizers, evaluation; import only the core
    "data": 1, "encoders": 1, "text": 1, "tokenizers": 1, "eval": 1, "memorisation": 1, "stats": 1,
    # engine: configuration, checkpoints, bank building, the training loop, using a trained run
    "config": 2, "checkpoint": 2, "bankbuild": 2, "factory": 2, "conditioning": 2, "train": 2, "inference": 2, "tblog": 2,
    # applications: reports, paper experiments, manipulation, text-to-image, the quickstart
    "report": 3, "arms": 3, "protocol": 3, "experiments": 3, "manipulate": 3, "t2i": 3, "quickstart": 3, "official": 3,
    "pipeline": 3, "live": 3,
    # the command line: owns its commands, imported by no library module
    "cli": 4,
}
LAYER_NAMES = ["core", "components", "engine", "applications", "cli"]
PACKAGE = {"__init__", "_modidx"}   # `import gmem` (its __version__) is below everything; _modidx is nbdev's index


def modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "gmem").glob("*.py") if p.stem not in PACKAGE)


def gmem_imports(name: str) -> set[str]:
    "The gmem modules `gmem/<name>.py` imports anywhere (module level, functions, methods): ast, not regexes."
    tree = ast.parse((ROOT / "gmem" / f"{name}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "gmem" and len(parts) > 1: out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and (node.module or "").split(".")[0] == "gmem"):
                mod = (node.module or "") if node.level else (node.module or "").removeprefix("gmem").lstrip(".")
                if mod: out.add(mod.split(".")[0])
                else: out |= {a.name for a in node.names if (ROOT / "gmem" / f"{a.name}.py").exists()}   # from . import x
    return out - {name} - PACKAGE


def graph() -> dict[str, set[str]]:
    return {m: gmem_imports(m) for m in modules()}


def test_every_module_has_a_layer():
    missing = [m for m in modules() if m not in LAYERS]
    assert not missing, f"modules without a layer: {missing}; add them to LAYERS in tests/test_layering.py and the README"


def test_no_upward_import():
    up = [f"gmem.{a} ({LAYER_NAMES[LAYERS[a]]}) imports gmem.{b} ({LAYER_NAMES[LAYERS[b]]})"
          for a, deps in graph().items() for b in sorted(deps) if a in LAYERS and b in LAYERS and LAYERS[b] > LAYERS[a]]
    assert not up, "imports pointing up the layers:\n  " + "\n  ".join(up)


def test_no_library_module_imports_the_cli():
    assert not [a for a, deps in graph().items() if "cli" in deps]


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    "One import circle of `g` as [a, b, ..., a], or None (depth-first search)."
    state, stack = {}, []
    def visit(n):
        state[n] = "open"; stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == "open": return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)): return c
        state[n] = "done"; stack.pop()
        return None
    for n in sorted(g):
        if n not in state and (c := visit(n)): return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    c = find_cycle(graph())
    assert c is None, "import circle: " + " -> ".join(c)


def test_the_parser_sees_function_local_and_relative_imports(tmp_path, monkeypatch):
    "The real module files: a function-local absolute import and a module-level relative one are both found."
    assert "utils" in gmem_imports("bank")            # module level: from .utils import ...
    assert "bankbuild" in gmem_imports("train")       # inside build_bank_file: from gmem.bankbuild import ... (-> .bankbuild)
    assert "train" in gmem_imports("cli")             # inside functions of the CLI


def test_readme_states_the_layers():
    "README 'What is inside': one row per module with the layer declared here."
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `[^`]+` \| `gmem\.(\w+)` \| (\w+) \|", text, flags=re.M)
    assert rows, "no '| notebook | module | layer | what |' rows in README.md"
    stated = dict(rows)
    wrong = {m: (stated.get(m), LAYER_NAMES[l]) for m, l in LAYERS.items() if stated.get(m) != LAYER_NAMES[l]}
    assert not wrong, f"README layer column disagrees with LAYERS (module: (README, here)): {wrong}"


def test_pipeline_loads_no_application_module():
    "Importing the diffusers pipeline (in a fresh interpreter) loads none of the report / experiment code."
    import subprocess, sys
    app = ["gmem.manipulate", "gmem.arms", "gmem.report", "gmem.experiments"]
    code = f"import sys, gmem.pipeline; print(' '.join(m for m in {app!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing gmem.pipeline loaded {r.stdout.split()}"


def chapter_of() -> dict[str, str]:
    "module -> the notebook it is exported from (its `# AUTOGENERATED ... File to edit: ../nbs/api/NN_x.ipynb` line)."
    out = {}
    for m in modules():
        hit = re.search(r"File to edit: \.\./nbs/api/([^/]+)\.ipynb", (ROOT / "gmem" / f"{m}.py").read_text()[:600])
        if hit: out[m] = hit[1]
    return out


def test_chapters_read_in_import_order():
    "A chapter comes after every chapter whose module it imports (at module level or in a function): nbs/api reads top down."
    ch = chapter_of()
    late = [f"{ch[m]} (gmem.{m}) imports gmem.{d}, whose chapter {ch[d]} comes later"
            for m, deps in graph().items() if m in ch for d in sorted(deps) if d in ch and ch[d] > ch[m]]
    assert not late, "chapters out of import order (rename the notebooks):\n" + "\n".join(late)
