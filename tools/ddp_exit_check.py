"""Run the 2-process CPU (gloo) torchrun smoke training N times in a row and count the runs that do not exit 0.

    python tools/ddp_exit_check.py [--runs 20] [--steps 4] [--load 1] [--keep]

Each run: `torchrun --nproc_per_node 2 -m gmem.cli train --preset mnist-smoke --out TMP --steps S --device cpu
--no-progress` in a fresh temporary folder. `--load K` runs K busy-loop processes beside the trainings (a loaded
machine is where a rank used to abort at interpreter exit with "terminate called without an active exception", issue
34). Prints one line per run and a summary; exits 1 when any run failed.
"""
import argparse, os, subprocess, sys, tempfile, time
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--load", type=int, default=0, help="busy-loop processes running beside the trainings")
    p.add_argument("--keep", action="store_true", help="write each failed run's stderr to ./ddp_exit_check-N.log")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.load)]
    fails, t0 = [], time.time()
    try:
        for i in range(a.runs):
            with tempfile.TemporaryDirectory() as d:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                       str(29500 + (os.getpid() + i) % 1000), "-m", "gmem.cli", "train", "--preset", "mnist-smoke",
                       "--out", str(Path(d) / "run"), "--steps", str(a.steps), "--device", "cpu", "--no-progress"]
                t = time.time()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            abort = "terminate called without an active exception" in r.stderr
            print(f"run {i + 1:3d}: exit {r.returncode}{' (terminate called without an active exception)' if abort else ''}"
                  f"  {time.time() - t:.1f} s", flush=True)
            if r.returncode != 0:
                fails.append(i + 1)
                if a.keep: Path(f"ddp_exit_check-{i + 1}.log").write_text(r.stderr)
                else: print(r.stderr[-2000:], flush=True)
    finally:
        for b in busy: b.kill(); b.wait()
    print(f"{a.runs - len(fails)}/{a.runs} runs exited 0 (load {a.load}, {time.time() - t0:.0f} s)"
          + (f"; failed: {fails}" if fails else ""))
    return 1 if fails else 0

if __name__ == "__main__": sys.exit(main())
