"""The Quarto configuration of the docs site (`nbdev_docs`): the sidebar lists exactly the notebooks (no yml files
as pages) and every stylesheet `nbs/_quarto.yml` names exists."""
from pathlib import Path

import yaml

NBS = Path(__file__).resolve().parents[1] / "nbs"


def _pages(contents) -> list[str]:
    out = []
    for c in contents:
        out += _pages(c["contents"]) if isinstance(c, dict) else [c]
    return out


def test_sidebar_lists_the_notebooks_only():
    pages = _pages(yaml.safe_load((NBS / "sidebar.yml").read_text())["website"]["sidebar"]["contents"])
    notebooks = sorted(str(p.relative_to(NBS)) for p in NBS.rglob("*.ipynb")
                       if not any(part.startswith((".", "_")) for part in p.relative_to(NBS).parts))
    assert sorted(pages) == notebooks, (set(pages) ^ set(notebooks))


def test_quarto_stylesheets_exist():
    css = yaml.safe_load((NBS / "_quarto.yml").read_text())["format"]["html"].get("css", [])
    missing = [c for c in ([css] if isinstance(css, str) else css) if not (NBS / c).is_file()]
    assert not missing, f"nbs/_quarto.yml names missing stylesheets: {missing}"


def _code_cells(nb: Path) -> list[dict]:
    import json
    return [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def _figures(nb: Path) -> int:
    return sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.get("outputs", []))


def test_chapters_read_as_documents():
    """Issue 24's sizes: no generated module above 700 lines, no export cell above 80, at least 15 saved figures across
    the library chapters (tools/run_chapters.py saves them), and the front page shows one."""
    long_modules = [(p.name, n) for p in (NBS.parent / "gmem").glob("*.py") if p.name != "_modidx.py"
                    and (n := len(p.read_text().splitlines())) > 700]
    assert not long_modules, f"modules above 700 lines: {long_modules}"
    long_cells = [(nb.name, n) for nb in sorted((NBS / "api").glob("*.ipynb")) for c in _code_cells(nb)
                  if "".join(c["source"]).startswith("#| export") and (n := len("".join(c["source"]).splitlines())) > 80]
    assert not long_cells, f"export cells above 80 lines: {long_cells}"
    figures = sum(_figures(nb) for nb in (NBS / "api").glob("*.ipynb"))
    assert figures >= 15, f"{figures} saved figures in nbs/api: run python tools/run_chapters.py"
    assert _figures(NBS / "index.ipynb") >= 1, "nbs/index.ipynb shows no figure: run python tools/run_chapters.py nbs/index.ipynb"
