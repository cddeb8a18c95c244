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
