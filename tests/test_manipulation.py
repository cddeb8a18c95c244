"""Memory manipulation, bank transfer and text-to-image (issue 6): fast unit tests, then the three report
notebooks run through papermill at the smoke preset (they share one trained model per test session)."""
import json
import math
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("manipulation")   # module fixtures built once: tests/conftest.py
import torch
import torch.nn.functional as F

from gmem.bank import MemoryBank
from gmem.encoders import PCAEncoder
from gmem.manipulate import PAPER_ALPHAS, interpolation_snippets, interpolation_strip
from gmem.conditioning import IncompatibleBankError, ImageRangeError, add_images, bank_from_images, check_compatible, sample_from_bank, sample_snippets, snippets_from_images
from gmem.model import create_model
from gmem.t2i import MapperConfig, MapperTrainConfig, retrieval_accuracy, train_text_to_snippet

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


def _images(n, seed, size=8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def enc():
    return PCAEncoder.fit(_images(80, 0), dim=8, pool_size=4)


def _net(dim):
    torch.manual_seed(0)
    return create_model("SiT-T/2", input_size=8, in_channels=3, snippet_dim=dim, repa_depth=None).eval()


@pytest.mark.parametrize("rank", [3, 8])
def test_projection_of_stored_snippet_reproduces_it(enc, rank):
    x = _images(80, 0)
    bank = bank_from_images(x, enc, rank=rank)
    f = snippets_from_images(x[:10], enc)
    torch.testing.assert_close(bank.project(f), bank.coefficients(range(10)), atol=1e-5, rtol=1e-5)   # eq. 10
    new = add_images(bank, x[:10], enc)
    torch.testing.assert_close(bank.snippets(new), bank.snippets(range(10)), atol=1e-5, rtol=1e-5)


def test_full_bank_appends_exactly(enc):
    bank = bank_from_images(_images(80, 0), enc)
    x = _images(4, 1)
    idx = add_images(bank, x, enc)
    assert idx.tolist() == [80, 81, 82, 83]
    torch.testing.assert_close(bank.snippets(idx), F.normalize(enc(x)[0], dim=1))


def test_zero_one_images_are_refused(enc):
    bank = bank_from_images(_images(80, 0), enc)
    x01 = (_images(2, 1) + 1) / 2
    with pytest.raises(ImageRangeError, match=r"look like \[0, 1\]"):
        add_images(bank, x01, enc)
    with pytest.raises(ImageRangeError, match="outside"):
        snippets_from_images(x01 * 255, enc)
    assert len(bank) == 80


@pytest.mark.parametrize("rank", [None, 4])
@pytest.mark.parametrize("space", ["coef", "linear", "slerp"])
def test_interpolation_endpoints_reproduce_parents(enc, rank, space):
    bank = bank_from_images(_images(80, 0), enc, rank=rank)
    S = interpolation_snippets(bank, 3, 11, alphas=(0.0, *PAPER_ALPHAS, 1.0), space=space)
    torch.testing.assert_close(S[1], bank.snippets([3])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(S[-2], bank.snippets([11])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(S.norm(dim=1), torch.ones(len(S)))


def test_interpolation_strip_columns(enc):
    bank = bank_from_images(_images(80, 0), enc, rank=4)
    net = _net(bank.dim)
    strip = interpolation_strip(net, bank, 3, 11, space="coef", seeds=[7, 8], steps=2)
    assert strip.shape == (2, 11, 3, 8, 8)
    torch.testing.assert_close(strip[:, 0], sample_snippets(net, bank.snippets([3, 3]), [7, 8], steps=2))
    torch.testing.assert_close(strip[:, -1], sample_snippets(net, bank.snippets([11, 11]), [7, 8], steps=2))


def test_transfer_with_mismatched_dims_errors(enc):
    net = _net(enc.dim)
    bank_b = bank_from_images(_images(30, 2), enc, dataset="B")                 # same encoder: accepted
    assert check_compatible(net, bank_b, encoder=enc)["fingerprint_checked"]
    assert sample_from_bank(net, bank_b, [0, 1], [0, 1], steps=2).shape == (2, 3, 8, 8)
    enc5 = PCAEncoder.fit(_images(80, 0), dim=5, pool_size=4)
    with pytest.raises(IncompatibleBankError, match="5-d"):
        sample_from_bank(net, bank_from_images(_images(30, 2), enc5), [0], [0], steps=2)
    other = PCAEncoder.fit(_images(80, 3), dim=enc.dim, pool_size=4)     # same name, other fit
    with pytest.raises(IncompatibleBankError, match="other weights"):
        check_compatible(net, bank_from_images(_images(30, 2), other), encoder=enc)


def test_t2i_mapping_retrieves_class_above_chance():
    g = torch.Generator().manual_seed(0)
    C, d, dt = 5, 12, 10
    centres, codes = torch.randn(C, d, generator=g), torch.randn(C, dt, generator=g)
    sl = torch.arange(100) % C
    sn = F.normalize(centres[sl] + 0.6 * torch.randn(100, d, generator=g), dim=1)
    tl = torch.arange(C).repeat_interleave(4)
    tx = codes[tl] + 0.3 * torch.randn(len(tl), dt, generator=g)
    held = codes + 0.3 * torch.randn(C, dt, generator=g)                    # prompts not used in training
    mapper, hist = train_text_to_snippet(tx, tl, sn, sl, MapperTrainConfig(epochs=40, lr=1e-2, batch_size=32),
                                         mapper=MapperConfig(text_dim=dt, snippet_dim=d, hidden=32))
    assert hist[-1] < hist[0]
    r = retrieval_accuracy(mapper, held, torch.arange(C), sn, sl)
    assert r["top1_class_mean"] > 2 * r["chance_class_mean"], r
    assert r["top1_snippet"] > 2 * r["chance_snippet"], r


# ---- the report notebooks at smoke (papermill) -------------------------------------------------------------
NOTEBOOKS = {
    "manipulation": ["projection", "novel", "interpolation", "mismatched_bank_refused", "live"],
    "transfer": ["sampling", "refused", "encoder_space_gap"],
    "t2i": ["retrieval", "generation", "mapper"],
}


def _finite(x):
    if isinstance(x, float): return math.isfinite(x)
    if isinstance(x, dict): return all(_finite(v) for v in x.values())
    if isinstance(x, list): return all(_finite(v) for v in x)
    return True


@pytest.fixture(scope="session")
def run_cache(shared_dir):
    "The application notebooks' arm cache, shared by the run's pytest workers (tests/conftest.py)."
    (shared_dir / "report-runs").mkdir(exist_ok=True)
    return shared_dir / "report-runs"


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_report_notebook_smoke(name, tmp_path, run_cache):
    pm = pytest.importorskip("papermill")
    out = tmp_path / name
    pm.execute_notebook(str(ROOT / "nbs" / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"), cwd=str(ROOT),
                        parameters=dict(preset="smoke", out_dir=str(out), cache_dir=str(run_cache)),
                        kernel_name="python3", progress_bar=False)
    doc = json.loads((out / "metrics.json").read_text())
    m = doc["metrics"]
    for key in NOTEBOOKS[name]:
        assert key in m, (key, sorted(m))
    assert _finite(m) and m["preset"] == "smoke"
    if name in ("transfer", "t2i"):                      # the App. D / E claim, decided on a Wilson interval
        (c,) = m["checks"]
        assert c["verdict"] in ("holds", "unresolved", "contradicted") and c["lo"] <= c["gap"] <= c["hi"], c
    assert doc["provenance"]["commit"] is None or len(doc["provenance"]["commit"]) >= 7
    assert (out / "summary.md").read_text().startswith("# ")
    assert list(out.glob("*.png"))
    if name == "manipulation":                           # headless: the live section degrades to a static figure
        assert m["live"]["widgets"] is False and (out / "live_static.png").stat().st_size > 0
    if name == "manipulation":
        assert m["projection"]["exact_append_max_abs_err"] < 1e-6 and m["mismatched_bank_refused"]
    if name == "transfer":
        assert m["refused"]["other_width"] and m["refused"]["same_name_other_fit_with_encoder"]
        for v in m["sampling"].values(): assert v["lo"] <= v["label_agreement"] <= v["hi"], v   # Wilson interval
    if name == "t2i":   # the contrastive mapping works on MiniLM features of the digit names
        r = m["retrieval"]["trained"]["train"]
        assert r["top1_class_mean"] > 2 * r["chance_class_mean"], r
        for v in m["generation"].values(): assert v["lo"] <= v["classifier_agreement"] <= v["hi"], v


def test_bad_parameter_fails_clearly(tmp_path):
    pm = pytest.importorskip("papermill")
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'mask_ratio'"):
        pm.execute_notebook(str(ROOT / "nbs" / "transfer.ipynb"), str(tmp_path / "bad.ipynb"), cwd=str(ROOT),
                            parameters=dict(mask_ratio=0.4, out_dir=str(tmp_path)), kernel_name="python3",
                            progress_bar=False)
