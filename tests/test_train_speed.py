"""The faster training loop (gmem.train, loop version 2) computes the same bits as the loop it replaced (version 1).

Version 1 (commit 1073d65) stepped AdamW and the EMA one parameter at a time, drew every batch through a
`DataLoader`, and ran with torch's thread count. The reference below re-implements that loop from its parts
(same seeds, same data order, same conditioning, per-parameter AdamW and EMA `lerp_`, two threads) and checks that
`gmem.train.train` ends with the same weights, EMA, optimizer state and per-step losses, bit for bit, for the GMem
and the class-conditional arm of the quickstart's configuration (on 256 digits, for speed).
"""
import copy
from pathlib import Path

import pytest
import torch

from gmem.checkpoint import latest_checkpoint, load_checkpoint
from gmem.factory import IndexedDataset, build_dataset, build_model, collate, num_classes_of, run_bank, _loss_config
from gmem.loss import flow_matching_loss
from gmem.quickstart import QuickstartConfig, quickstart_config
from gmem.train import StepBatches, ema_decay_at, read_metrics, step_generator, train, train_threads
from gmem.utils import derive_seed, torch_threads

STEPS = 12


def _cfg(arm):
    cfg = quickstart_config(arm, QuickstartConfig(steps=STEPS, progress=False))
    cfg.data.limit, cfg.ckpt_every, cfg.device = 256, STEPS, "cpu"
    return cfg


def _reference_v1(cfg, ds, bank):
    "The version-1 loop: per-parameter AdamW and EMA, a DataLoader, two threads. Returns (model, ema, opt, losses)."
    with torch_threads(2):
        ids = IndexedDataset(ds)
        x0 = ids[0]["x"]
        n_cls = num_classes_of(ds, cfg.data) if cfg.model.cond == "class" else 1000
        torch.manual_seed(derive_seed("init", cfg.seed))
        model = build_model(cfg, input_size=x0.shape[-1], in_channels=x0.shape[0],
                            snippet_dim=bank.dim if bank is not None else 768, num_classes=n_cls, repa_dim=768)
        ema = copy.deepcopy(model).eval().requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                weight_decay=cfg.optim.weight_decay, foreach=False)
        loader = torch.utils.data.DataLoader(ids, batch_sampler=StepBatches(len(ids), cfg.batch_size, cfg.seed, 0, cfg.steps),
                                             collate_fn=collate)
        mask = None
        if cfg.model.cond == "snippet" and cfg.mask.strategy != "zero" and cfg.mask.ratio > 0:
            from gmem.bank import mask_snippets as mask
        losses = []
        model.train()
        for step, batch in enumerate(loader):
            g = step_generator(cfg.seed, step)
            torch.manual_seed(derive_seed("global", cfg.seed, 0, step))
            if cfg.model.cond == "snippet":
                c = bank.snippets(batch["index"]).float()
                if mask is not None: c = mask(c, cfg.mask.ratio, cfg.mask.strategy, generator=g)
            else:
                c = batch["label"]
            terms = flow_matching_loss(model, batch["x"], c, _loss_config(cfg), generator=g)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            d = ema_decay_at(step, cfg.optim.ema_decay, cfg.optim.ema_warmup)
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()): e.lerp_(p.detach(), 1 - d)
            losses.append(float(terms["total"].detach()))
    return model, ema, opt, losses


@pytest.mark.parametrize("arm", ["gmem", "sit"])
def test_loop_v2_equals_v1_bit_for_bit(tmp_path, arm):
    cfg = _cfg(arm)
    ds = build_dataset(cfg.data, seed=cfg.seed)
    bank = run_bank(cfg, ds, tmp_path / "bank") if cfg.model.cond == "snippet" else None
    train(cfg, tmp_path / "v2", progress=False, bank=bank)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "v2"))
    assert ck["train_loop"] == 2
    model, ema, opt, losses = _reference_v1(cfg, ds, bank)
    assert [r["loss"] for r in read_metrics(tmp_path / "v2" / "metrics.csv")] == losses
    for name, ref in (("model", model.state_dict()), ("ema", ema.state_dict())):
        assert all(torch.equal(ck[name][k], v) for k, v in ref.items()), f"{name} weights differ from the version-1 loop"
    ref_state = opt.state_dict()["state"]
    for i, st in ck["optimizer"]["state"].items():
        assert all(torch.equal(torch.as_tensor(st[k]), torch.as_tensor(ref_state[i][k])) for k in st), f"AdamW state {i}"


def test_train_threads():
    cfg = _cfg("gmem")
    small = torch.nn.Linear(4, 4)
    assert train_threads(cfg, small, torch.device("cpu")) == 1            # small network on the CPU: one thread
    assert train_threads(cfg, small, torch.device("cuda")) is None        # CUDA: the CPU thread count is left alone
    big = torch.nn.Linear(4000, 3000)                                     # 12 M parameters: torch's default
    assert train_threads(cfg, big, torch.device("cpu")) is None
    cfg.threads = 2
    assert train_threads(cfg, small, torch.device("cpu")) == 2
    n = torch.get_num_threads()
    train(_cfg("sit"), Path(__import__("tempfile").mkdtemp()) / "r", progress=False)
    assert torch.get_num_threads() == n                                   # the loop restores the caller's count
