"""`TrainConfig.cpu_workers=2` (gmem.train.CPUWorkers): one run's batches split over two CPU processes.

The split keeps the draws of one process (masks, noise, times and dropout masks of the whole batch), so the per-step
losses of the quickstart's GMem and class arms agree with `cpu_workers=1` over 50 steps to float rounding (the
gradient is summed in another order, so not bit for bit). A `cpu_workers=2` run is itself deterministic and resumes
exactly, and the NaN guard stops it with the usual message and no worker left behind.
"""
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import torch

import gmem.train as gtrain
from gmem.checkpoint import CKPT_DIR, latest_checkpoint, load_checkpoint
from gmem.factory import build_dataset, num_classes_of, run_bank
from gmem.model import GMemDiT
from gmem.quickstart import QuickstartConfig, quickstart_config
from gmem.train import NonFiniteLossError, read_metrics, train


def _cfg(arm, steps, workers, **kw):
    cfg = quickstart_config(arm, QuickstartConfig(steps=steps, progress=False))
    cfg.data.limit, cfg.device, cfg.cpu_workers = 256, "cpu", workers
    for k, v in kw.items(): setattr(cfg, k, v)
    return cfg


def _bank(cfg, tmp_path):
    if cfg.model.cond != "snippet": return None
    return run_bank(cfg, build_dataset(cfg.data, seed=cfg.seed), tmp_path / "bank")


def _losses(run_dir):
    return [r["loss"] for r in read_metrics(Path(run_dir) / "metrics.csv")]


def _same_checkpoint(a, b):
    ka, kb = (load_checkpoint(latest_checkpoint(d)) for d in (a, b))
    assert ka["step"] == kb["step"]
    for part in ("model", "ema"):
        for k in ka[part]: assert torch.equal(ka[part][k], kb[part][k]), (part, k)
    sa, sb = ka["optimizer"]["state"], kb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]: assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)


@pytest.mark.parametrize("arm", ["gmem", "sit"])
def test_two_workers_agree_with_one_over_50_steps(tmp_path, arm):
    cfg1, cfg2 = _cfg(arm, 50, 1), _cfg(arm, 50, 2)
    bank = _bank(cfg1, tmp_path)
    train(cfg1, tmp_path / "w1", progress=False, bank=bank)
    train(cfg2, tmp_path / "w2", progress=False, bank=bank)
    l1, l2 = _losses(tmp_path / "w1"), _losses(tmp_path / "w2")
    assert len(l1) == len(l2) == 50
    rel = max(abs(a - b) / abs(a) for a, b in zip(l1, l2))
    print(f"{arm}: max relative loss difference over 50 steps, cpu_workers 2 vs 1: {rel:.2e}")
    assert rel <= 1e-5, rel
    assert not multiprocessing.active_children()


def test_two_workers_resume_exactly_and_are_deterministic(tmp_path):
    cfg = _cfg("gmem", 30, 2, ckpt_every=10)
    bank = _bank(cfg, tmp_path)
    train(cfg, tmp_path / "full", progress=False, bank=bank)
    train(cfg, tmp_path / "again", progress=False, bank=bank)
    _same_checkpoint(tmp_path / "full", tmp_path / "again")                       # same seed, same checkpoint
    assert _losses(tmp_path / "full") == _losses(tmp_path / "again")
    part = tmp_path / "part"
    train(_cfg("gmem", 12, 2, ckpt_every=10), part, progress=False, bank=bank)
    (part / CKPT_DIR / "step-00000012.pt").unlink()                               # killed after step 12
    (part / CKPT_DIR / "latest").write_text("step-00000010.pt\n")
    train(cfg, part, progress=False, bank=bank, resume=True)
    _same_checkpoint(tmp_path / "full", part)
    assert _losses(tmp_path / "full") == _losses(part)


class NaNDiT(GMemDiT):
    "The quickstart's network, returning NaN from its 14th training call on (importable: the worker unpickles it)."
    nan_at = 14

    def forward(self, x, t, snippet=None, return_repa=False, cond_emb=None):
        self.calls = getattr(self, "calls", 0) + self.training
        v = super().forward(x, t, snippet, return_repa, cond_emb)
        return v * float("nan") if self.calls >= self.nan_at else v


def _started(monkeypatch):
    "The worker processes every CPUWorkers of the test starts."
    procs, init = [], gtrain.CPUWorkers.__init__
    def spy(self, *a, **k):
        init(self, *a, **k); procs.extend(self.procs)
    monkeypatch.setattr(gtrain.CPUWorkers, "__init__", spy)
    return procs


def test_nan_guard_stops_two_workers(tmp_path, monkeypatch):
    procs = _started(monkeypatch)
    cfg = _cfg("sit", 30, 2, ckpt_every=10)
    torch.manual_seed(0)
    ds = build_dataset(cfg.data, seed=cfg.seed)
    x0 = ds[0][0]
    model = gtrain.build_model(cfg, input_size=x0.shape[-1], in_channels=x0.shape[0], snippet_dim=768,
                               num_classes=num_classes_of(ds, cfg.data))
    model.__class__ = NaNDiT
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, tmp_path / "nan", progress=False, model=model)
    assert "non-finite loss (nan) at step 14" in str(e.value) and "step-00000010.pt" in str(e.value), str(e.value)
    assert load_checkpoint(latest_checkpoint(tmp_path / "nan"))["step"] == 10
    assert read_metrics(tmp_path / "nan" / "metrics.csv")[-1]["step"] == 13
    assert len(procs) == 1 and not procs[0].is_alive() and procs[0].exitcode == 0   # stopped cleanly
    assert not multiprocessing.active_children()


def test_a_dead_worker_stops_the_run(tmp_path, monkeypatch):
    procs = _started(monkeypatch)
    def kill():
        while not procs: time.sleep(0.05)
        time.sleep(3); procs[0].kill()
    threading.Thread(target=kill, daemon=True).start()
    t0 = time.time()
    with pytest.raises(RuntimeError, match="CPU worker 1 died"):
        train(_cfg("sit", 5000, 2), tmp_path / "dead", progress=False)
    assert time.time() - t0 < 120 and not multiprocessing.active_children()
