#!/usr/bin/env python
"""Where the quickstart's scoring time goes: a breakdown per arm, on a cold and on a warm reference cache.

    python tools/bench_scoring.py --label before --note 'quiet machine'     # writes reports/perf/scoring_cpu.json

It runs the quickstart's two arms (`gmem.quickstart`: GMem and the class-conditional SiT, side by side as `make
quickstart` runs them) through the reports' runner, in a fresh temporary cache, with a short training (`--steps`,
default 200: what scoring costs does not depend on how long the arm trained) and the quickstart's scoring at full
size (500 samples, 1,000 held-out and 1,000 training reference digits, 200 bootstrap replicates, C_T in pixel and
bank space). Each evaluation records its `score_breakdown` (`gmem.experiments.Experiment.evaluate`: seconds per part,
measured with `gmem.utils.Stopwatch` inside the process that scored it):

  * cold: the reference features are not cached yet (a fresh machine's first `make quickstart`);
  * warm: the same arms scored again with the reference features cached (every later run).

The JSON keeps one entry per `--label` (e.g. before / after a change), so one file shows both; the README section in
reports/perf/README.md is regenerated (`tools/bench_train.py --readme-only` does that too).
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _machine() -> dict:
    from bench_train import _cpu_name
    import torch
    from gmem.utils import git_commit
    return dict(device_name=_cpu_name(), torch=torch.__version__, git_commit=git_commit(ROOT),
                time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), loadavg=list(os.getloadavg()))


def _arm_rows(res: dict, wall: float) -> dict:
    rows = {}
    for arm, (run, tr, ev) in res.items():
        rows[arm] = dict(sample_seconds=ev["sample_seconds"], score_seconds=ev["fid_seconds"],
                         breakdown=ev.get("score_breakdown") or {}, fid=ev["fid"], ct_pixel=ev.get("ct_pixel"))
    return dict(arms=rows, wall_seconds=wall)


def bench(steps: int, workers: int) -> dict:
    "Train the quickstart's arms briefly, score them on a cold, then on a warm reference cache."
    tmp = Path(tempfile.mkdtemp(prefix="gmem-bench-scoring-"))
    os.environ["GMEM_CACHE"] = str(tmp / "cache")       # an empty cache: no reference features yet (spawned jobs inherit it)
    try:
        from gmem.quickstart import QuickstartConfig, quickstart_experiment, _run_arms
        qc = QuickstartConfig(out=str(tmp / "qs"), steps=steps, workers=workers, progress=False)
        out = {}
        for phase in ("cold", "warm"):
            if phase == "warm": shutil.rmtree(tmp / "qs" / "runs" / "eval")   # score the same trained arms again
            exp = quickstart_experiment(qc)
            t = time.perf_counter()
            r = _run_arms(exp, qc)          # (arms, seconds of the reference features computed first); older code: arms
            res, refs = r if isinstance(r, tuple) else (r, 0.0)
            out[phase] = dict(_arm_rows(res, time.perf_counter() - t), references_seconds=refs)
            print(f"{phase}: references {refs:.0f} s; " + "; ".join(f"{a} scoring {r['score_seconds']:.0f} s" for a, r in out[phase]["arms"].items()),
                  flush=True)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="now", help="name of this measurement in the JSON (e.g. before, after)")
    ap.add_argument("--steps", type=int, default=200, help="training steps per arm (scoring does not depend on them)")
    ap.add_argument("--workers", type=int, default=2, help="arms side by side, as the quickstart runs them")
    ap.add_argument("--note", default="", help="what else ran on the machine")
    ap.add_argument("--out", default=str(ROOT / "reports" / "perf" / "scoring_cpu.json"))
    ap.add_argument("--readme-only", action="store_true", help="only regenerate reports/perf/README.md")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if not a.readme_only:
        from gmem.utils import atomic_write
        d = json.loads(out.read_text()) if out.exists() else {}
        entry = dict(_machine(), command="python tools/bench_scoring.py " + " ".join(sys.argv[1:] if argv is None else argv),
                     note=a.note, steps=a.steps, workers=a.workers, **bench(a.steps, a.workers))
        d[a.label] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out, "w") as f: json.dump(d, f, indent=1)
    from bench_train import write_readme
    print(f"wrote {out} and {write_readme(out.parent)}")


if __name__ == "__main__":
    main()
