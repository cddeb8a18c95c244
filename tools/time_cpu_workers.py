"""Steady-state ms/step of the quickstart's GMem arm (SiT-T/2, 16x16 digits, batch 32) with cpu_workers 1 and 2.

    python tools/time_cpu_workers.py [--steps 400] [--limit 0] [--workers 1,2]

Each setting trains one fresh run in a temporary folder; the steady state is read from metrics.csv's `time` column
between step steps/4 and the last step; the loop's total (first steps and the worker's start included) and the whole
call (data, bank, start-up) are printed too. Run it on a quiet machine: the two processes need both cores.
"""
import argparse, tempfile, time
from pathlib import Path

from gmem.quickstart import QuickstartConfig, quickstart_config
from gmem.train import read_metrics, train


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--limit", type=int, default=0, help="train on this many digits (0: all 4,000)")
    ap.add_argument("--workers", default="1,2", help="cpu_workers settings to time, in order")
    ap.add_argument("--arm", default="gmem")
    a = ap.parse_args()
    tmp, ms = Path(tempfile.mkdtemp()), {}
    for w in (int(v) for v in a.workers.split(",")):
        cfg = quickstart_config(a.arm, QuickstartConfig(steps=a.steps, progress=False))
        cfg.device, cfg.cpu_workers = "cpu", w
        if a.limit: cfg.data.limit = a.limit
        t0 = time.perf_counter()
        s = train(cfg, tmp / f"w{w}", progress=False)
        wall = time.perf_counter() - t0
        t = {r["step"]: r["time"] for r in read_metrics(tmp / f"w{w}" / "metrics.csv")}
        k = a.steps // 4
        ms[w] = 1000 * (t[a.steps] - t[k]) / (a.steps - k)
        print(f"cpu_workers={w}: {ms[w]:.1f} ms/step steady (steps {k}-{a.steps}), loop {1000 * s['seconds'] / a.steps:.1f} "
              f"ms/step with its first steps, whole call {wall:.1f} s", flush=True)
    if 1 in ms and len(ms) > 1:
        for w in ms:
            if w != 1: print(f"cpu_workers={w} / cpu_workers=1: {ms[w] / ms[1]:.2f}")


if __name__ == "__main__":
    main()
