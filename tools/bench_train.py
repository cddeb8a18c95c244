#!/usr/bin/env python
"""Training and sampling throughput of the GMem diffusion transformer (images/s), fp32 vs bf16, eager vs torch.compile.

    python tools/bench_train.py --loops                          # CPU: today's training loop against an older commit's,
                                                                 # end to end on the experiments' config (~10 min)
    python tools/bench_train.py --loops --loop-steps 20 60       # the same, a smoke-size run
    python tools/bench_train.py --quick                          # CPU smoke run (~1 min): SiT-T/2, few steps
    python tools/bench_train.py                                  # CPU default: SiT-T/2 and SiT-S/2 on 4x32x32
    python tools/bench_train.py --device cuda                    # GPU default: the paper models, bf16+fp32, eager+compile
    python tools/bench_train.py --device cuda --model LightningDiT-XL/1 --batch-size 128 --compile on
    python tools/bench_train.py --readme-only                    # only rebuild reports/perf/README.md

One training step is what `gmem.train` does per batch (without its data loading and logging): flow-matching loss
(logit-normal t, cosine term, REPA term against synthetic encoder tokens when the model has a projector), backward,
gradient-norm clipping, AdamW (fused on CUDA), EMA update. Precision: fp32, or bf16 autocast (`gmem.utils.autocast` on
CUDA; `torch.autocast("cpu")` on the CPU, labelled `bf16-cpu-autocast`, which `gmem.train` itself does not use).
Sampling: the official SDE-Heun sampler (50 steps, 99 network calls) and an ODE Euler sampler (50 steps, shift 0.3,
50 calls) in eval mode, no guidance. Timings: warm-up steps excluded (with torch.compile the first call, i.e. the
compilation, is reported separately as `compile_s`), `torch.cuda.synchronize()` around every timed region on CUDA,
`--repeats` timed groups, median reported (all groups kept in the JSON). Peak memory: CUDA `max_memory_allocated`;
on the CPU the process's peak RSS (a high-water mark over the whole run, so later configurations include earlier ones).
Writes reports/perf/train_<device>.json and regenerates reports/perf/README.md from every JSON in that folder.

`--loops` measures what the experiments pay instead of one step: `gmem.train.train` itself (data, bank, checkpoints,
metrics included) on the configuration the cpu experiments train (the tables' standard arm: MNIST-5k 1x16x16, batch 32, GMem
arm; SiT-T/2 and LightningDiT-T/1), once with this checkout's loop and once with the loop of `--baseline` (a commit,
extracted with `git archive` and run from there), each in its own process, a short and a long run of each, in
alternation. The time of a 2,500-step arm is projected from the two (a + b * steps: fixed costs such as the bank
build count), and the ratio old / new is reported with the fraction of the fp32 peak (sgemm measured in the same run).
Writes reports/perf/loops_cpu.json.
"""
from __future__ import annotations
import argparse, copy, json, math, os, platform, resource, shlex, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gmem.loss import LossConfig, flow_matching_loss  # noqa: E402
from gmem.model import MODELS, count_params, create_model  # noqa: E402
from gmem.samplers import SDE_T_END, sample  # noqa: E402
from gmem.train import ema_update  # noqa: E402
from gmem.utils import atomic_write, autocast, git_commit  # noqa: E402

# model -> (C, H) of its input; the paper's settings: VA-VAE 32x16x16 latents for LightningDiT, SD-VAE 4x32x32 for SiT
GPU_MODELS = {"LightningDiT-B/1": (32, 16), "LightningDiT-XL/1": (32, 16), "SiT-XL/2": (4, 32)}
CPU_MODELS = {"SiT-T/2": (4, 32), "SiT-S/2": (4, 32)}
GPU_BATCH = {"LightningDiT-B/1": 256, "LightningDiT-XL/1": 128, "SiT-XL/2": 128}   # per GPU (paper: 1024 over 8 GPUs)
SAMPLERS = {  # name -> gmem.samplers.sample kwargs (steps may be overridden with --sample-steps)
    "sde-heun": dict(mode="sde", method="heun", steps=50, t_end=SDE_T_END),   # official GMem sampler, 99 calls
    "ode-euler": dict(mode="ode", method="euler", steps=50, shift=0.3),       # 50 calls
}
SNIPPET_DIM, REPA_DIM = 768, 768        # DINOv2-B CLS snippets / patch tokens (synthetic here)
PEERS = """\
Figures reported by others, **not measured here** (from `shared/reference/anchors-performance-ecosystem.md`;
[S] stated by the source, [D] arithmetic on stated numbers, [E] estimate):

- GMem-XL (LightningDiT-XL/1, VA-VAE 32x16x16, bf16, batch 1024 on 8xH800): 200k steps in ~20 h [S] ->
  ~355 training img/s per GPU [D]; ~38% of the bf16 dense peak [D].
- LightningDiT-XL/1: ~285 training img/s per H800 [D]; LightningDiT-B/1: >= 1,200 training img/s per H100 [D].
- DiT-XL/2 (fast-DiT, 1xA100, batch 128, mixed precision, pre-extracted latents): 0.84 steps/s (~108 img/s), 27.5 GB [S].
- Sampling, XL at 256^2 without CFG on one H100 [E]: NFE 100 -> 25-40 img/s; NFE 50 -> 50-85 img/s.
"""


def _cpu_name() -> str:
    "The CPU's model name (Linux), else the platform's word for it."
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp(device, precision):
    "The autocast context of a precision label."
    if precision == "fp32":
        return autocast(device, enabled=False)
    if device.type == "cuda":
        return autocast(device, enabled=True)              # gmem.utils.autocast: bf16 on CUDA
    return torch.autocast("cpu", dtype=torch.bfloat16)     # optional CPU bf16 (labelled bf16-cpu-autocast)


def _label(device, precision):
    return "bf16-cpu-autocast" if precision == "bf16" and device.type == "cpu" else precision


def _peak_mem_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss          # KiB on Linux, bytes on macOS
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def _reset_mem(device):
    if device.type == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)


def fwd_gflop(model, shape, device, batch=1):
    "Forward GFLOP per image (torch.utils.flop_counter: matmuls/convs/attention, 2 FLOP per MAC), or None."
    try:
        from torch.utils.flop_counter import FlopCounterMode
        x = torch.zeros(batch, *shape, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, torch.full((batch,), 0.5, device=device), torch.zeros(batch, model.config.snippet_dim, device=device))
        return fc.get_total_flops() / batch / 1e9
    except Exception:  # the estimate is optional
        return None


def timed_groups(fn, device, repeats, steps):
    "Seconds of `steps` calls of fn(), `repeats` times."
    out = []
    for _ in range(repeats):
        _sync(device); t = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device); out.append(time.perf_counter() - t)
    return out


def bench_one(name, shape, *, device, batch, precision, compiled, steps, warmup, repeats, repa, samplers,
              sample_batch, sample_steps, sample_repeats, seed=0):
    "Train and sample throughput of one (model, precision, compile) configuration; a result dict."
    torch.manual_seed(seed)
    C, H = shape
    model = create_model(name, input_size=H, in_channels=C, snippet_dim=SNIPPET_DIM,
                         repa_depth=MODELS[name].get("repa_depth", 4) if repa else None,
                         repa_dim=REPA_DIM if repa else None).to(device)
    n_tok = model.config.grid_size ** 2
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0,
                            fused=True if device.type == "cuda" else None)
    net = torch.compile(model) if compiled else model
    loss_cfg = LossConfig(repa_weight=0.5 if repa else 0.0)
    g = torch.Generator(device=device).manual_seed(seed)
    x1 = torch.randn(batch, C, H, H, device=device, generator=g)                       # (B, C, H, W) "latents"
    snip = torch.nn.functional.normalize(torch.randn(batch, SNIPPET_DIM, device=device, generator=g), dim=-1)
    target = torch.randn(batch, n_tok, REPA_DIM, device=device, generator=g) if repa else None  # (B, N, 768)
    res = dict(model=name, input_shape=[C, H, H], tokens=n_tok, params_M=count_params(model) / 1e6,
               batch_size=batch, precision=_label(device, precision), compile=compiled, repa=repa)
    res["fwd_gflop_per_img"] = fwd_gflop(model, (C, H, H), device)
    last = {}

    def step():
        with _amp(device, precision):
            terms = flow_matching_loss(net, x1, snip, loss_cfg, repa_target=target, generator=g)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, 0.9999)
        last["loss"] = terms["total"]

    _reset_mem(device)
    net.train()
    _sync(device); t = time.perf_counter(); step(); _sync(device)
    first = time.perf_counter() - t                     # includes compilation when compiled
    for _ in range(max(0, warmup - 1)):
        step()
    secs = timed_groups(step, device, repeats, steps)
    ips = [batch * steps / s for s in secs]
    res.update(train_img_s=statistics.median(ips), train_img_s_groups=ips, train_steps_per_group=steps,
               train_first_step_s=first, train_loss_last=float(last["loss"].detach()),
               peak_mem_train_MB=_peak_mem_mb(device))
    med_step = batch / res["train_img_s"]
    if compiled:
        res["train_compile_s"] = max(0.0, first - med_step)   # first step minus a steady step
    if res["fwd_gflop_per_img"]:
        res["train_tflop_s_est"] = 3 * res["fwd_gflop_per_img"] * res["train_img_s"] / 1e3   # fwd + bwd ~ 3x fwd

    # ---- sampling (eval mode, no guidance)
    del opt, ema
    net.eval()      # (on a compiled wrapper this reaches the original module too)
    res["sample"] = {}
    xs = torch.randn(sample_batch, C, H, H, device=device, generator=g)
    ss = torch.nn.functional.normalize(torch.randn(sample_batch, SNIPPET_DIM, device=device, generator=g), dim=-1)
    for sname in samplers:
        kw = dict(SAMPLERS[sname])
        if sample_steps:
            kw["steps"] = sample_steps
        _reset_mem(device)
        def run():
            with _amp(device, precision):
                return sample(net, xs, ss, generator=g, return_nfe=True, **kw)
        _sync(device); t = time.perf_counter(); out, nfe = run(); _sync(device)
        first = time.perf_counter() - t
        secs = timed_groups(run, device, sample_repeats, 1)
        ips = [sample_batch / s for s in secs]
        r = dict(nfe=int(nfe), steps=kw["steps"], batch_size=sample_batch, img_s=statistics.median(ips), img_s_groups=ips,
                 first_call_s=first, finite=bool(torch.isfinite(out.float()).all()), peak_mem_MB=_peak_mem_mb(device))
        if compiled:
            r["compile_s"] = max(0.0, first - sample_batch / r["img_s"])
        res["sample"][sname] = r
    del model, net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compiled:
        torch._dynamo.reset()
    return res


LOOP_BASELINE = "1073d65"   # the last commit of training loop version 1 (gmem.train.TRAIN_LOOP_VERSION)
LOOP_MODELS = ("SiT-T/2", "LightningDiT-T/1")
LOOP_CONFIG = ("the cpu tables' standard GMem arm, the quickstart's gmem arm (MNIST-5k training digits 1x16x16, patch 4, "
               "batch 32, PCA-32 bank built in each run, zero mask 0.4)")
LOOP_CONFIG_BEFORE = ("the quickstart's configuration of the time (mnist-tiny: MNIST-5k training digits 1x16x16, patch 4, "
                      "batch 32, GMem arm, PCA-64 bank built in each run)")   # what JSONs without a `config` measured
# the cpu tables' standard GMem arm (gmem.protocol.standard_arm; the quickstart's gmem arm), spelled out over a trainer
# preset that the baseline commit has too (mnist-smoke), so that both loops train the same config: the 4,000 training
# digits at 16 px, patch 4 (16 tokens) for every backbone, PCA-32 bank, zero mask 0.4, batch 32. The loop and breakdown
# scripts get it as JSON and add the backbone, the steps and (breakdown) the workers.
LOOP_ARM = {"data.limit": None, "data.split": "train", "data.image_size": 16, "bank.pca_dim": 32, "bank.batch_size": 500,
            "model.patch_size": 4, "model.cond": "snippet", "mask.ratio": 0.4, "mask.strategy": "zero",
            "batch_size": 32, "sample.every": 0, "device": "cpu", "seed": 0}
LOOP_SCRIPT = r"""
import json, sys, time, shutil
import torch
from gmem.config import get_preset
from gmem.train import train, read_metrics
model, steps, out, threads, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
# LOOP_ARM (argv[6]) with this backbone and step count
cfg = get_preset("mnist-smoke").override({**json.loads(sys.argv[6]), "model.name": model, "steps": steps,
                                          "ckpt_every": steps})
if threads != "loop": torch.set_num_threads(int(threads))    # what the old loop ran with (it never chose)
if workers > 1: cfg.cpu_workers = workers
shutil.rmtree(out, ignore_errors=True)
t = time.perf_counter(); s = train(cfg, out, progress=False); wall = time.perf_counter() - t
losses = [r["loss"] for r in read_metrics(out + "/metrics.csv")]
print("RESULT " + json.dumps(dict(wall_s=wall, loop_s=s["seconds"], steps=s["step"], loss_first=losses[:50],
                                  threads=s.get("threads", torch.get_num_threads()))))
"""


BREAKDOWN_SCRIPT = r"""
import collections, json, sys, time, shutil
import gmem.train as T
from gmem.config import get_preset
acc, cnt = collections.defaultdict(float), collections.Counter()
def timed(obj, name, key):
    f = getattr(obj, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); acc[key] += time.perf_counter() - t; cnt[key] += 1; return r
    setattr(obj, name, g)
if __name__ == "__main__":
    model, steps, out, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    timed(T, "_rows_loss", "forward+backward of this process's rows")
    timed(T.CPUWorkers, "_reply", "waiting for the worker")
    timed(T.CPUWorkers, "step", "split step (draws, exchange, gradient sum)")
    timed(T.CPUWorkers, "optimizer_step", "optimizer + EMA step (split)")
    cfg = get_preset("mnist-smoke").override({**json.loads(sys.argv[5]), "model.name": model, "steps": steps,
                                              "ckpt_every": steps, "cpu_workers": workers})
    shutil.rmtree(out, ignore_errors=True)
    s = T.train(cfg, out, progress=False)
    print("RESULT " + json.dumps(dict(loop_s=s["seconds"], steps=s["step"], ms_per_step=1e3 * s["seconds"] / s["step"],
                                      parts={k: 1e3 * v / s["step"] for k, v in acc.items()})))
"""


def bench_breakdown(models, steps: int = 600, workers: int = 2) -> dict:
    "Where a cpu_workers step's time goes (ms per step, fixed costs such as the workers' start included), per model."
    out = []
    for m in models:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
            p = subprocess.run([sys.executable, "-c", BREAKDOWN_SCRIPT, m, str(steps), tmp + "/run", str(workers),
                                json.dumps(LOOP_ARM)],
                               env=env, cwd=tmp, capture_output=True, text=True)
            line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
            if p.returncode or not line: raise RuntimeError(f"breakdown run failed ({m}):\n{p.stderr[-3000:]}")
            out.append(dict(model=m, workers=workers, **json.loads(line[0][7:])))
    return dict(results=out)


def _baseline_tree(commit: str) -> Path:
    "The gmem package of `commit`, extracted into a temporary folder (its root goes on PYTHONPATH)."
    d = Path(tempfile.mkdtemp(prefix=f"gmem-{commit}-"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "gmem"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
    return d


def _loop_run(pythonpath, model, steps, threads, workers=1):
    "One `gmem.train.train` run in a fresh process; its RESULT dict."
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "TQDM_DISABLE": "1"}
        p = subprocess.run([sys.executable, "-c", LOOP_SCRIPT, model, str(steps), out + "/run", str(threads), str(workers),
                            json.dumps(LOOP_ARM)],
                           env=env, cwd=out, capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode or not line:
            raise RuntimeError(f"training run failed ({model}, {steps} steps, PYTHONPATH={pythonpath}):\n{p.stderr[-3000:]}")
        return json.loads(line[0][7:])


def bench_loops(models, steps_short, steps_long, baseline, workers=(1,), arm_steps=2500, progress=True):
    "Old loop (commit `baseline`, torch's 2 threads) against this checkout's, end to end; a result dict per model."
    from tqdm.auto import tqdm
    old_tree = _baseline_tree(baseline)
    from bench_features import sgemm_gflops   # the one sgemm measurement of the tools (tools/ is the script's folder)
    peak = sgemm_gflops(torch.device("cpu"))
    loops = [("old", old_tree, "2", 1)] + [(f"new{'' if w == 1 else f'-{w}workers'}", ROOT, "loop", w) for w in workers]
    results = []
    bar = tqdm(total=len(models) * len(loops) * 2, desc="loop runs", disable=not progress)
    for m in models:
        runs = {name: {} for name, *_ in loops}
        for n in (steps_short, steps_long):          # alternate old and new at each length: drift hits both
            for name, tree, threads, w in loops:
                runs[name][n] = _loop_run(tree, m, n, threads, w); bar.update()
        res = dict(model=m, steps_short=steps_short, steps_long=steps_long, loops={})
        for name, r in runs.items():
            a_s, b_s = r[steps_short]["wall_s"], r[steps_long]["wall_s"]
            per_step = (b_s - a_s) / (steps_long - steps_short)
            fixed = a_s - per_step * steps_short
            res["loops"][name] = dict(wall_short_s=a_s, wall_long_s=b_s, s_per_step=per_step, fixed_s=fixed,
                                      arm_s=fixed + per_step * arm_steps, img_s=32 / per_step,
                                      threads=r[steps_long]["threads"], loss_first=r[steps_long]["loss_first"])
        old = res["loops"]["old"]
        for name, r in res["loops"].items():
            r["speedup_vs_old"] = old["arm_s"] / r["arm_s"]
            d = [abs(x - y) / abs(x) for x, y in zip(old["loss_first"], r["loss_first"])]
            r["loss_max_rel_diff_vs_old"] = max(d) if d else None
            r["loss_bit_identical_to_old"] = old["loss_first"] == r["loss_first"]
        C, H = 1, 16
        net = create_model(m, input_size=H, in_channels=C, snippet_dim=64, patch_size=4)
        res["fwd_gflop_per_img"] = fwd_gflop(net, (C, H, H), torch.device("cpu"))
        if res["fwd_gflop_per_img"]:
            for r in res["loops"].values():
                r["fraction_of_fp32_peak"] = 3 * res["fwd_gflop_per_img"] * r["img_s"] / peak
        results.append(res)
    bar.close()
    return dict(sgemm_gflops=peak, baseline=baseline, arm_steps=arm_steps, config=LOOP_CONFIG, results=results)


def loops_table(d) -> str:
    head = ["model", "loop", "threads", "s/step", "img/s", "fixed s", f"{d['arm_steps']}-step arm s", "x old",
            "of fp32 peak", "losses vs old (first 50 steps)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in d["results"]:
        for name, r in res["loops"].items():
            same = "bit-identical" if r["loss_bit_identical_to_old"] else f"max rel. diff {r['loss_max_rel_diff_vs_old']:.1e}"
            rows.append("| " + " | ".join([res["model"], name, str(r["threads"]), f"{r['s_per_step'] * 1e3:.1f} ms",
                                           f"{r['img_s']:.0f}", f"{r['fixed_s']:.1f}", f"{r['arm_s']:.0f}",
                                           f"**{r['speedup_vs_old']:.2f}x**", _fmt(r.get("fraction_of_fp32_peak"), 3),
                                           same]) + " |")
    return "\n".join(rows)


def _fmt(v, nd=2):
    if v is None: return "-"
    if isinstance(v, float): return f"{v:.{nd}f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def table(results, samplers) -> str:
    "Markdown table of the results."
    head = ["model", "input", "batch", "precision", "compile", "REPA", "train img/s", "compile s", "peak MB",
            "fwd GFLOP/img"] + [f"{s} img/s (NFE)" for s in samplers]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['model']} | | {r.get('batch_size', '')} | {r.get('precision', '')} | {r.get('compile', '')} "
                        f"| | error: {r['error'][:80]} |" + " |" * (len(head) - 7)); continue
        smp = [f"{_fmt(r['sample'][s]['img_s'], 3)} ({r['sample'][s]['nfe']})" if s in r.get("sample", {}) else "-"
               for s in samplers]
        rows.append("| " + " | ".join([r["model"], "x".join(map(str, r["input_shape"])), str(r["batch_size"]),
                                       r["precision"], "on" if r["compile"] else "off", "on" if r["repa"] else "off",
                                       _fmt(r["train_img_s"]), _fmt(r.get("train_compile_s"), 1),
                                       _fmt(r["peak_mem_train_MB"], 0), _fmt(r["fwd_gflop_per_img"])] + smp) + " |")
    return "\n".join(rows)


def _run_line(d: dict) -> str:
    "The command, machine, commit, time, load and note of one measurement, as README bullets."
    return (f"- command: `{d.get('command')}`\n- {d.get('device_name')}, torch {d.get('torch')}, git {d.get('git_commit')}, "
            f"{d.get('time_utc')}, load average at start {d.get('loadavg')}; other processes: {d.get('note') or '-'}\n")


def scoring_section(path: Path) -> str:
    "The quickstart's scoring breakdown (`tools/bench_scoring.py`): seconds per part, per arm, cold and warm, per label."
    d = json.loads(path.read_text())
    out = [f"## Where the quickstart's scoring time goes (`{path.name}`, `tools/bench_scoring.py`)\n",
           "Seconds per part of one arm's scoring (`Experiment.evaluate`'s `score_breakdown`), the two quickstart arms "
           "scored side by side as `make quickstart` scores them; cold: no reference features cached yet (a fresh "
           "machine's first run), warm: cached. `scoring` is the whole stage (sampling not included); `other` is what "
           "no part measured (loading the networks, building the copying tests' inputs).\n"]
    for label, e in d.items():
        out.append(f"### {label}\n\n" + _run_line(e) + f"- arms trained {e.get('steps')} steps (scoring does not depend "
                   f"on it), {e.get('workers')} side by side\n")
        arms = list(e["cold"]["arms"])
        parts = list(dict.fromkeys(k for ph in ("cold", "warm") for a in arms for k in e[ph]["arms"][a]["breakdown"]))
        cols = [f"{ph}: {a}" for ph in ("cold", "warm") for a in arms]
        rows = [["**scoring**"] + [f"**{e[ph]['arms'][a]['score_seconds']:.1f}**" for ph in ("cold", "warm") for a in arms]]
        rows += [[k] + [_fmt(e[ph]["arms"][a]["breakdown"].get(k, 0.0), 1) for ph in ("cold", "warm") for a in arms]
                 for k in parts]
        rows += [["reference features first, every core (once per run, before the arms)"]
                 + [_fmt(e[ph].get("references_seconds", 0.0), 1) if i == 0 else "" for ph in ("cold", "warm")
                    for i, a in enumerate(arms)]]
        rows += [["sampling (context)"] + [_fmt(e[ph]["arms"][a]["sample_seconds"], 1) for ph in ("cold", "warm") for a in arms]]
        out.append("| part | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
                   + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n")
    return "\n".join(out)


def write_readme(folder: Path) -> Path:
    "(Re)generate folder/README.md from every JSON in `folder`."
    parts = ["# Performance benchmarks\n",
             "Generated by `tools/bench_train.py` (rerun it, or `python tools/bench_train.py --readme-only`, to refresh). "
             "Each section says the command that regenerates its JSON. Numbers are whatever the run measured.\n"]
    jsons = sorted(folder.glob("*.json"))
    trains = [p for p in jsons if p.name.startswith("train_")]
    others_known = ("loops_", "breakdown_", "scoring_")
    parts.append("## Training and sampling throughput (`tools/bench_train.py`)\n")
    for p in trains:
        d = json.loads(p.read_text())
        parts.append(f"### `{p.name}`: {d.get('device_name')} ({d.get('device')})\n")
        parts.append(f"- command: `{d.get('command')}`\n- torch {d.get('torch')}, git {d.get('git_commit')}, "
                     f"{d.get('time_utc')}, threads {d.get('threads')}, load average at start {d.get('loadavg')}"
                     + (", **quick (smoke) run: few steps, reduced sampler steps; not a measurement**" if d.get("quick") else "")
                     + (", **incomplete run (stopped before all configurations)**" if d.get("complete") is False else ""))
        if d.get("note"):
            parts.append(f"- note: {d['note']}")
        parts.append("- train img/s: full optimizer step (loss incl. cosine + REPA terms, backward, grad clip, AdamW, EMA), "
                     "median over timed groups; sampling img/s: one batch end to end, no guidance, NFE = network calls.\n")
        parts.append(table(d["results"], d.get("samplers", list(SAMPLERS))) + "\n")
    if not any(json.loads(p.read_text()).get("device") == "cuda" for p in trains):
        parts.append("### GPU\n\nNot measured: no GPU was available to this session. To measure on a GPU: "
                     "`python tools/bench_train.py --device cuda` (paper models LightningDiT-B/1 and LightningDiT-XL/1 on "
                     "32x16x16, SiT-XL/2 on 4x32x32; bf16 and fp32; eager and torch.compile) writes `train_cuda.json`.\n")
    for p in [p for p in jsons if p.name.startswith("loops_")]:
        d = json.loads(p.read_text())
        parts.append(f"## The training loop end to end (`{p.name}`)\n")
        parts.append(_run_line(d) + f"- `gmem.train.train` on {d.get('config', LOOP_CONFIG_BEFORE)}, old = commit {d['baseline']} (loop version 1, torch's 2 threads), new = this "
                     f"checkout; each run in its own process; a {d['arm_steps']}-step arm projected from a "
                     f"{d['results'][0]['steps_short']}- and a {d['results'][0]['steps_long']}-step run (fixed costs count). "
                     f"Fraction of the fp32 peak: 3 x forward FLOPs x img/s against a {d['sgemm_gflops']:.0f} GFLOP/s "
                     f"sgemm (2048^2, torch's threads) measured in the same run.\n")
        parts.append(loops_table(d) + "\n")
    for p in [p for p in jsons if p.name.startswith("breakdown_")]:
        d = json.loads(p.read_text())
        parts.append(f"## Where a `cpu_workers=2` step goes (`{p.name}`)\n")
        parts.append(_run_line(d) + f"- {d.get('config')}; the main process's time per step (the worker runs "
                     "the other half of the rows meanwhile), averaged over the run, the workers' start included\n")
        rows = [dict(model=r["model"], **{"ms per step": f"{r['ms_per_step']:.1f}"},
                     **{k: f"{v:.1f}" for k, v in r["parts"].items()}) for r in d["results"]]
        cols = list(rows[0]) if rows else []
        parts.append("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
                     + "\n".join("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows) + "\n")
    for p in [p for p in jsons if p.name.startswith("scoring_")]:
        parts.append(scoring_section(p))
    feats = [p for p in jsons if p.name.startswith("features_")]
    if feats:
        parts.append("## Encoder and FID feature throughput (`tools/bench_features.py`)\n")
        for p in feats:
            d = json.loads(p.read_text())
            cmd = d.get("command") or (f"python tools/bench_features.py --device {d.get('device')} --count {d.get('count')} "
                                       f"--batch {d.get('batch')}")
            parts.append(f"### `{p.name}`: {d.get('device_name')} ({d.get('device')})\n\n- command: `{cmd}`\n"
                         f"- torch {d.get('torch')}, git {d.get('git_commit')}, {d.get('time_utc')}, load average "
                         f"{d.get('loadavg')}\n\n| measurement | img/s |\n|---|---|")
            parts += [f"| {k} | {_fmt(v, 3)} |" for k, v in d.get("results", {}).items()]
            parts.append("")
            if d.get("note"):
                parts.append(f"- note: {d['note']}")
            s = d.get("summary")
            if s:
                peak = ", ".join(f"{k} {v:.0%}" for k, v in s["fraction_of_fp32_peak"].items())
                diff = ", ".join(f"{k} {v:.1e}" for k, v in s["max_abs_feature_diff_vs_plain"].items() if k != "plain")
                fids = ", ".join(f"{k} {v}" for k, v in s["fid_half_vs_half"].items())
                parts.append(f"- **{s['fast_path']} ({s['fast_backend']}) / plain: {s['ratio_fast_over_plain']:.2f}x** "
                             f"end to end, measured in this run ({d.get('count')} {d.get('images')} images, batches of "
                             f"{d.get('batch')})\n- fraction of the fp32 peak ({s['inception_gflop_per_image']:.2f} GFLOP "
                             f"per image against a {s['sgemm_gflops']:.0f} GFLOP/s sgemm measured in the same run): {peak}\n"
                             f"- largest feature difference from plain (features reach {s['max_abs_feature']:.2f}): {diff}\n"
                             f"- {s['fid_note']}: {fids} (equal to 4 significant digits: "
                             f"{'yes' if s['fid_equal_to_4_significant_digits'] else 'no'})\n")
    others = [p for p in jsons if p not in trains and p not in feats and not p.name.startswith(others_known)]
    for p in others:
        parts.append(f"## `{p.name}`\n\n(not summarised: unknown format)\n")
    parts.append("## Reference figures from peers (theirs, not ours)\n\n" + PEERS)
    out = folder / "README.md"
    with atomic_write(out, "w") as f:
        f.write("\n".join(parts))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", nargs="+", default=None,
                    help=f"model names (default CPU: {', '.join(CPU_MODELS)}; CUDA: {', '.join(GPU_MODELS)}); "
                         "input C and H default per model (LightningDiT 32x16x16, SiT 4x32x32)")
    ap.add_argument("--channels", type=int, default=None, help="input channels C (overrides the per-model default)")
    ap.add_argument("--input-size", type=int, default=None, help="input side H = W (overrides the per-model default)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default CPU 8, CUDA per model)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per group (default CPU 3, CUDA 20)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first, incl. the compile step (default 2 / 5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed groups; the median is reported")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None,
                    help="fp32, bf16 autocast, or both (default: both on CUDA, fp32 on the CPU where bf16 is optional)")
    ap.add_argument("--compile", choices=["on", "off", "both"], default=None,
                    help="torch.compile the model (default: both on CUDA, off on the CPU)")
    ap.add_argument("--repa", choices=["on", "off"], default="on", help="REPA projector + loss term (synthetic targets)")
    ap.add_argument("--samplers", nargs="*", default=list(SAMPLERS), choices=list(SAMPLERS),
                    help="samplers to time (none: training only)")
    ap.add_argument("--sample-batch", type=int, default=None, help="images per sampling run (default CPU 2, CUDA 64)")
    ap.add_argument("--sample-steps", type=int, default=None,
                    help="override the samplers' 50 steps (e.g. a smoke run); the JSON records the NFE actually run")
    ap.add_argument("--sample-repeats", type=int, default=None, help="timed sampling runs (default CPU 1, CUDA 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; --quick: 1). On a CPU shared with other jobs, 1 thread "
                         "can be several times faster than 2 (no spin-waiting for a busy core)")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: SiT-T/2 only, batch 4, 2 steps x 2 groups, sampler steps 3, 1 CPU thread, eager fp32 on CPU")
    ap.add_argument("--breakdown", action="store_true",
                    help="CPU: where a cpu_workers=2 step's time goes (writes breakdown_cpu.json)")
    ap.add_argument("--breakdown-steps", type=int, default=600, help="--breakdown: steps per model")
    ap.add_argument("--loops", action="store_true",
                    help="CPU: gmem.train.train end to end, this checkout's loop against --baseline's (writes loops_cpu.json)")
    ap.add_argument("--baseline", default=LOOP_BASELINE, help=f"--loops: the commit whose loop is 'old' (default {LOOP_BASELINE})")
    ap.add_argument("--loop-steps", type=int, nargs=2, default=(250, 1000), metavar=("SHORT", "LONG"),
                    help="--loops: the short and long runs a 2,500-step arm is projected from")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="--loops: the new loop's cpu_workers values to measure (e.g. 1 2)")
    ap.add_argument("--note", default=None, help="free-text note stored in the JSON and the README")
    ap.add_argument("--out", default=None, help="JSON path (default reports/perf/train_<device>.json); the README is "
                                                 "regenerated in the same folder")
    ap.add_argument("--no-readme", action="store_true", help="do not regenerate README.md next to --out")
    ap.add_argument("--readme-only", action="store_true", help="only regenerate the README from the JSONs there")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    out = Path(a.out or ROOT / "reports" / "perf" / f"train_{device.type}.json")
    if a.readme_only:
        print(f"wrote {write_readme(out.parent)}"); return None
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if a.breakdown:
        out = Path(a.out or ROOT / "reports" / "perf" / "breakdown_cpu.json")
        res = dict(device="cpu", device_name=_cpu_name(), torch=torch.__version__, git_commit=git_commit(ROOT),
                   command="python tools/bench_train.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
                   time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), loadavg=os.getloadavg(), note=a.note,
                   config=LOOP_CONFIG, **bench_breakdown(a.model or list(LOOP_MODELS), a.breakdown_steps))
        with atomic_write(out, "w") as f: json.dump(res, f, indent=1)
        for r in res["results"]:
            print(f"{r['model']}: {r['ms_per_step']:.1f} ms/step; " + "; ".join(f"{k} {v:.1f}" for k, v in r["parts"].items()))
        if not a.no_readme: print(f"wrote {write_readme(out.parent)}")
        return res
    if a.loops:
        if device.type != "cpu": ap.error("--loops measures the CPU loop; use --device cpu")
        out = Path(a.out or ROOT / "reports" / "perf" / "loops_cpu.json")
        res = dict(device="cpu", device_name=_cpu_name(), torch=torch.__version__, git_commit=git_commit(ROOT),
                   command="python tools/bench_train.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
                   time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cpu_count=os.cpu_count(),
                   loadavg=os.getloadavg(), note=a.note)
        res.update(bench_loops(a.model or list(LOOP_MODELS), *a.loop_steps, a.baseline, workers=a.workers))
        with atomic_write(out, "w") as f:
            json.dump(res, f, indent=1)
        print(loops_table(res)); print(f"wrote {out}")
        if not a.no_readme: print(f"wrote {write_readme(out.parent)}")
        return res
    if a.threads or a.quick:
        torch.set_num_threads(a.threads or 1)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True   # fp32 = TF32 matmuls
    models = a.model or (["SiT-T/2"] if a.quick else list(GPU_MODELS if gpu else CPU_MODELS))
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; valid: {', '.join(MODELS)}")
    q = a.quick
    steps = a.steps or (2 if q else 20 if gpu else 3)
    warmup = a.warmup if a.warmup is not None else (1 if q else 5 if gpu else 2)
    repeats = 2 if q and a.repeats == 3 else a.repeats
    precisions = {"both": ["fp32", "bf16"], None: ["fp32", "bf16"] if gpu else ["fp32"]}.get(a.precision, [a.precision])
    compiles = {"both": [False, True], "on": [True], "off": [False], None: [False, True] if gpu else [False]}[a.compile]
    sample_steps = a.sample_steps or (3 if q else None)
    sample_batch = a.sample_batch or (2 if q or not gpu else 64)
    sample_repeats = a.sample_repeats or (3 if gpu else 1)

    res = dict(device=str(device), device_name=torch.cuda.get_device_name(device) if gpu else (platform.processor() or platform.machine()),
               torch=torch.__version__, git_commit=git_commit(ROOT), command="python " + shlex.join(
                   [os.path.relpath(sys.argv[0], ROOT) if sys.argv and sys.argv[0].endswith(".py") else "tools/bench_train.py"]
                   + (list(argv) if argv is not None else sys.argv[1:])),
               time_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None, quick=q,
               note=a.note, samplers=a.samplers, complete=False, results=[])
    if gpu:
        res["cuda"] = torch.version.cuda
    for m in models:
        C, H = (GPU_MODELS | CPU_MODELS).get(m, (4, 32))
        C, H = a.channels or C, a.input_size or H
        batch = a.batch_size or (4 if q else GPU_BATCH.get(m, 128) if gpu else 8)
        for prec in precisions:
            for comp in compiles:
                tag = f"{m} {_label(device, prec)} compile={'on' if comp else 'off'}"
                print(f"[bench] {tag} batch {batch} input {C}x{H}x{H} ...", flush=True)
                try:
                    r = bench_one(m, (C, H), device=device, batch=batch, precision=prec, compiled=comp, steps=steps,
                                  warmup=warmup, repeats=repeats, repa=a.repa == "on", samplers=a.samplers,
                                  sample_batch=sample_batch, sample_steps=sample_steps, sample_repeats=sample_repeats)
                except (RuntimeError, torch.OutOfMemoryError) as e:   # e.g. OOM, or torch.compile failing here
                    if gpu: torch.cuda.empty_cache()
                    r = dict(model=m, batch_size=batch, precision=_label(device, prec), compile=comp, error=f"{type(e).__name__}: {e}")
                    print(f"[bench] {tag}: {r['error'][:200]}", flush=True)
                else:
                    smp = ", ".join(f"{k} {v['img_s']:.3f} img/s (NFE {v['nfe']})" for k, v in r["sample"].items())
                    print(f"[bench] {tag}: train {r['train_img_s']:.2f} img/s, peak {r['peak_mem_train_MB']:.0f} MB"
                          + (f", compile {r['train_compile_s']:.1f} s" if comp else "") + (f"; {smp}" if smp else ""), flush=True)
                res["results"].append(r)
                with atomic_write(out, "w") as f:      # after every configuration: a long run keeps what it measured
                    json.dump(res, f, indent=1)
    res["complete"] = True
    with atomic_write(out, "w") as f:
        json.dump(res, f, indent=1)
    print(table(res["results"], a.samplers))
    print(f"wrote {out}")
    if not a.no_readme:
        print(f"wrote {write_readme(out.parent)}")
    return res


if __name__ == "__main__":
    main()
