#!/usr/bin/env python
"""Execute library chapters in place so that their examples' outputs (numbers, tables, figures) are saved.

    python tools/run_chapters.py                      # every chapter in nbs/api and nbs/index.ipynb
    python tools/run_chapters.py nbs/api/01_bank.ipynb nbs/api/04_samplers.ipynb

Runs each notebook the way `nbdev_test` does: in its own folder, skipping the cells nbdev_test skips (`#| eval: false`
and the settings.ini `tst_flags`, e.g. `#| slow`), then writes the notebook back (atomically) with the outputs of the
cells that ran and runs `nbdev_clean` on it, so the saved outputs are what JupyterLab, GitHub and `nbdev_docs` show.
Cells that did not run keep no output. A failing cell stops that notebook and leaves its file untouched.
"""
from __future__ import annotations
import argparse, configparser, os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _flags() -> set[str]:
    c = configparser.ConfigParser(); c.read(ROOT / "settings.ini")
    return set(c["DEFAULT"].get("tst_flags", "").split())


def _skipped(src: str, flags: set[str]) -> bool:
    "True for a cell nbdev_test would not run: `#| eval: false` or a test flag such as `#| slow`."
    for line in src.splitlines():
        m = re.match(r"^\s*#\s*\|\s*(.*?)\s*$", line)
        if not m: continue
        d = m.group(1).replace(" ", "")
        if d in ("eval:false", "eval:False") or d in flags: return True
    return False


def run_chapter(path: Path, timeout: int = 900) -> float:
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    flags = _flags()
    run_nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # a copy whose skipped cells are emptied
    skip = []
    for i, c in enumerate(run_nb.cells):
        if c.cell_type == "code" and _skipped(c.source, flags):
            c.source = ""; skip.append(i)
    t = time.perf_counter()
    env_cwd = str(path.parent.resolve())
    NotebookClient(run_nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": env_cwd}}).execute()
    for i, (c, r) in enumerate(zip(nb.cells, run_nb.cells)):
        if c.cell_type != "code": continue
        c.outputs = [] if i in skip else r.outputs
        c.execution_count = None
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=path.parent); os.close(fd)
    nbformat.write(nb, tmp); os.chmod(tmp, os.stat(path).st_mode & 0o777); os.replace(tmp, path)
    subprocess.run(["nbdev_clean", "--fname", str(path)], cwd=ROOT, check=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: nbs/api/*.ipynb and nbs/index.ipynb)")
    a = p.parse_args(argv)
    nbs = [Path(n) for n in a.notebooks] or sorted((ROOT / "nbs" / "api").glob("*.ipynb")) + [ROOT / "nbs" / "index.ipynb"]
    for n in nbs:
        print(f"{n}: {run_chapter(n.resolve()):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
