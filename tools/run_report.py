#!/usr/bin/env python
"""Run a report notebook through papermill and render it.

    python tools/run_report.py NAME [-p KEY VALUE ...] [--out-dir DIR]
    python tools/run_report.py --index

Executes nbs/NAME.ipynb into OUT/NAME.ipynb (OUT = the notebook's out_dir, default reports/NAME; preset paper
writes into OUT/paper), renders OUT/NAME.html with the code hidden, and rebuilds reports/README.md.
Values after -p are parsed like papermill's -p (ints, floats, True/False/None, else strings).
"""
from __future__ import annotations
import argparse, ast, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_value(v: str):
    "papermill-style: Python literal when it parses as one (int, float, bool, None, list), else the string."
    try: return ast.literal_eval(v)
    except (ValueError, SyntaxError): return v


def main(argv=None) -> int:
    from gmem.report import resolve_out_dir
    from gmem.report import build_index
    from gmem.paper import REPORTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", choices=list(REPORTS), help="report notebook (nbs/NAME.ipynb)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="notebook parameter (repeatable), e.g. -p mask_ratio 0.4")
    p.add_argument("--index", action="store_true", help="only rebuild reports/README.md from the metrics.json files")
    p.add_argument("--no-html", action="store_true", help="skip the HTML rendering")
    p.add_argument("--no-index", action="store_true",
                   help="do not rebuild reports/README.md (when running several reports: rebuild once at the end, "
                        "so the tree stays clean and each metrics.json records a clean commit)")
    a = p.parse_args(argv)
    if a.index or a.name is None:
        if a.name is None and not a.index: p.error("give a report NAME or --index")
        print(build_index(ROOT / "reports")); return 0
    import papermill as pm
    from gmem.report import render_html
    params = {k: parse_value(v) for k, v in a.parameter}
    nb = ROOT / "nbs" / f"{a.name}.ipynb"
    if not nb.exists(): p.error(f"{nb} does not exist")
    out = resolve_out_dir(params.get("out_dir", f"reports/{a.name}"), params.get("preset", "smoke"))
    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"{a.name}.ipynb"
    t = time.perf_counter()
    pm.execute_notebook(str(nb), str(executed), parameters=params, kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False)
    print(f"{a.name}: executed in {time.perf_counter() - t:.0f} s -> {executed}")
    if not a.no_html: print("rendered", render_html(executed, out / f"{a.name}.html"))
    if not a.no_index: print("index", build_index(ROOT / "reports"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
