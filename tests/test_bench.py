"""Smoke test of tools/bench_train.py: it runs, writes a JSON of finite positive numbers and a README (no speed targets)."""
import json, math, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train_cpu.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_train.py"), "--quick", "--device", "cpu", "--steps", "1",
           "--repeats", "1", "--sample-steps", "2", "--out", str(out)]
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    d = json.loads(out.read_text())
    assert d["device"] == "cpu" and d["quick"] is True and d["torch"] and "bench_train.py" in d["command"]
    (r,) = d["results"]
    assert r["model"] == "SiT-T/2" and r["precision"] == "fp32" and r["compile"] is False and r["repa"] is True
    pos = lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    for k in ("train_img_s", "peak_mem_train_MB", "fwd_gflop_per_img", "params_M", "train_first_step_s"):
        assert pos(r[k]), (k, r[k])
    assert math.isfinite(r["train_loss_last"])
    assert set(r["sample"]) == {"sde-heun", "ode-euler"}
    assert r["sample"]["sde-heun"]["nfe"] == 3 and r["sample"]["ode-euler"]["nfe"] == 2   # Heun: 2*steps - 1
    for s in r["sample"].values():
        assert pos(s["img_s"]) and s["finite"] is True
    readme = (tmp_path / "README.md").read_text()
    assert "train_cpu.json" in readme and "not measured: no gpu" in readme.lower() and "theirs" in readme


def test_bench_features_quick(tmp_path):
    "tools/bench_features.py runs on a few digits and records each path, the ratio and the FID of each path (no speed target)."
    out = tmp_path / "features_cpu.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_features.py"), "--device", "cpu", "--count", "8", "--batch", "4",
           "--repeats", "1", "--out", str(out), "--no-readme"]
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    d = json.loads(out.read_text())
    pos = lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    for k in ("plain", "torch+resize-threads", "onnxruntime", "fast"):
        assert pos(d["results"][f"fid/end_to_end/{k}"]), k
    s = d["summary"]
    assert s["fast_backend"] == "onnxruntime" and pos(s["ratio_fast_over_plain"]) and pos(s["sgemm_gflops"])
    assert 11 < s["inception_gflop_per_image"] < 12                       # Inception-v3 at 299x299: 11.4 GFLOP
    assert max(s["max_abs_feature_diff_vs_plain"].values()) < 1e-4 and s["max_abs_feature_diff_vs_plain"]["plain"] == 0
    assert d["fid_weights"]["fast"]["backend"] == "onnxruntime" and d["fid_weights"]["plain"]["backend"] == "torch"


def test_bench_train_breakdown(tmp_path):
    "--breakdown runs a short cpu_workers=2 training and records where the main process's time goes (no speed target)."
    out = tmp_path / "breakdown_cpu.json"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_train.py"), "--breakdown", "--breakdown-steps", "12",
           "--model", "SiT-T/2", "--out", str(out)]
    p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    (r,) = json.loads(out.read_text())["results"]
    assert r["model"] == "SiT-T/2" and r["steps"] == 12 and r["workers"] == 2 and r["ms_per_step"] > 0
    assert r["parts"]["forward+backward of this process's rows"] > 0 and "waiting for the worker" in r["parts"]
    assert "Where a `cpu_workers=2` step goes" in (tmp_path / "README.md").read_text()
