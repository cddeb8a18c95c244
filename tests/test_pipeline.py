"""Cross-module tests: bank -> model -> loss -> sampler on a tiny CPU configuration."""
import copy

import pytest
import torch

from gmem.bank import MemoryBank
from gmem.loss import LossConfig, flow_matching_loss
from gmem.model import create_model
from gmem.samplers import sample, seeded_noise

torch.set_num_threads(1)


def _toy_data(n=32, size=8, dim=16, seed=0):
    "Images that are a smooth function of their own feature vector, so conditioning carries information."
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, dim, generator=g)
    proj = torch.randn(dim, 3 * size * size, generator=g) / dim**0.5
    x = torch.tanh(feats @ proj).reshape(n, 3, size, size)
    return x, feats


def _tiny(dim, cond="snippet", **kw):
    torch.manual_seed(0)
    return create_model("SiT-T/2", input_size=8, in_channels=3, snippet_dim=dim, cond=cond,
                        snippet_dropout=0.0, repa_depth=0, repa_dim=None, **kw)


@pytest.mark.parametrize("rank", [None, 8])
def test_training_with_bank_snippets_lowers_loss(rank):
    x, feats = _toy_data()
    bank = MemoryBank.from_features(feats, rank=rank)
    model = _tiny(bank.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    cfg = LossConfig(cos_weight=0.0, repa_weight=0.0)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(60):
        idx = torch.randint(0, len(bank), (16,), generator=g)
        out = flow_matching_loss(model, x[idx], bank.snippets(idx), cfg, generator=g)
        opt.zero_grad(); out["total"].backward(); opt.step()
        losses.append(out["total"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)


def test_save_reload_reproduces_samples_exactly(tmp_path):
    x, feats = _toy_data()
    bank = MemoryBank.from_features(feats, rank=8)
    model = _tiny(bank.dim).eval()
    bank.save(tmp_path / "bank.safetensors")
    torch.save(model.state_dict(), tmp_path / "model.pt")

    bank2 = MemoryBank.load(tmp_path / "bank.safetensors")
    model2 = _tiny(bank.dim)
    model2.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    model2.eval()

    seeds = list(range(6))
    def run(m, b):
        idx = b.sample_indices(len(seeds), seeds=seeds)
        noise = seeded_noise(seeds, (3, 8, 8))
        return sample(m, noise, b.snippets(idx), mode="sde", method="heun", steps=6,
                      generator=torch.Generator().manual_seed(0))
    a, b = run(model, bank), run(model2, bank2)
    assert torch.equal(a, b)
    assert a.shape == (6, 3, 8, 8) and torch.isfinite(a).all()


def test_snippet_conditioning_changes_samples():
    x, feats = _toy_data()
    bank = MemoryBank.from_features(feats)
    model = _tiny(bank.dim, zero_init_adaln=False).eval()   # untrained: SiT's adaLN-Zero init would output zeros
    noise = seeded_noise([0, 0], (3, 8, 8))
    out = sample(model, noise, bank.snippets([0, 1]), mode="ode", method="euler", steps=4)
    assert not torch.allclose(out[0], out[1])


def test_class_and_unconditional_baselines_share_the_network():
    for cond, c in [("class", torch.tensor([1, 2])), ("none", None)]:
        model = create_model("SiT-T/2", input_size=8, in_channels=3, cond=cond, num_classes=10,
                             repa_depth=0, repa_dim=None).eval()
        out = sample(model, seeded_noise([0, 1], (3, 8, 8)), c, mode="ode", method="heun", steps=3)
        assert out.shape == (2, 3, 8, 8)
