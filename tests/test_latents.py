"""The ImageNet (latent) path of the paper presets, end to end at toy size on the CPU.

The pieces are the real ones: real MNIST digits, a diffusers AutoencoderKL tokenizer, `extract_latents`, a bank
built by `gmem.bankbuild.build_bank`, the trainer's `imagenet256-lightningdit-b` preset (VA-VAE-style latent store,
REPA from stored patch tokens, one flip coin per item), `gmem.experiments` at preset `paper`, decoding through
the store's tokenizer, FID with the real Inception network, and the `gmem sample` CLI.

What is NOT real, and is not presented as real: the autoencoder has RANDOM weights (no pretrained SD-VAE/VA-VAE is
available offline), the snippet encoder is a PCA of the pixels with 2x2 pixel patches as "patch tokens" (no DINOv2
weights offline), the backbone is the tiny LightningDiT-T/1, and the FID reference statistics are a made-up
Gaussian. The test checks plumbing and structure - shapes, finiteness, decoding consistency, caching - not quality.
"""
import json, math, os, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("latents")   # module fixtures built once: tests/conftest.py
import torch

from gmem.bankbuild import build_bank
from gmem.data import Mnist5kDataset, limit_dataset
from gmem.encoders import Encoder, PCAEncoder
from gmem.tokenizers import LatentDecoder, SDVAETokenizer, extract_latents

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES, SIZE = 128, 32


class ToyEncoder(Encoder):
    "Stand-in for DINOv2 (no weights offline): CLS = 96 PCA coefficients, patch tokens = 2x2 pixel patches (256 x 12)."
    name, dim, patch_dim, num_patches = "toy-pca-patches", 96, 12, 256

    def __init__(self, pca: PCAEncoder):
        super().__init__(); self.pca = pca; self.input_size = SIZE; self._freeze()

    def preprocess(self, images): return images

    def encode(self, x):
        cls, _ = self.pca(x)
        patch = x.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5).reshape(len(x), 256, 12)
        return cls, patch


@pytest.fixture(scope="module")
def paper_inputs(tmp_path_factory):
    "A latent store, its bank, reference statistics and the (random-weight) autoencoder folder: a paper run's inputs."
    d = tmp_path_factory.mktemp("latent-paper")
    torch.manual_seed(0)
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                        norm_num_groups=32, sample_size=SIZE).eval()          # random weights, f = 2
    vae.save_pretrained(d / "vae")
    ds = limit_dataset(Mnist5kDataset(image_size=SIZE), N_IMAGES)
    enc = ToyEncoder(PCAEncoder.fit(torch.stack([ds[i][0] for i in range(len(ds))]), dim=96, pool_size=16))
    tok = SDVAETokenizer.from_pretrained(d / "vae", local_files_only=True)
    meta = extract_latents(ds, tok, d / "store", batch_size=16, shard_size=32, encoder=enc, progress=False)
    bank = build_bank(ds, enc, d / "bank.safetensors", batch_size=16, progress=False)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 64)) / 8
    np.savez(d / "ref_stats.npz", mu=rng.standard_normal(2048) / 10, sigma=a @ a.T)   # made up: not ImageNet's
    return dict(dir=d, store=d / "store", bank=d / "bank.safetensors", stats=d / "ref_stats.npz", vae=d / "vae",
                meta=meta, bank_rows=len(bank))


def test_store_and_bank_describe_the_same_images(paper_inputs):
    m = paper_inputs["meta"]
    assert m["count"] == N_IMAGES == paper_inputs["bank_rows"]
    assert m["latent_shape"] == [4, 16, 16] and m["tokenizer"] == "sd-vae" and m["flip"]
    assert m["tokenizer_weights"] == str(paper_inputs["vae"])


def test_paper_experiment_on_a_latent_store(paper_inputs, tmp_path):
    from gmem.experiments import start
    from gmem.inference import load_run, generate, decode_samples
    p = paper_inputs
    params = dict(preset="paper", paper_preset="imagenet256-lightningdit-b", out_dir=str(tmp_path / "out"),
                  cache_dir=str(tmp_path / "cache"), data_root=str(p["store"]), bank_path=str(p["bank"]),
                  fid_stats=str(p["stats"]), device="cpu", num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "preset 'paper' without a GPU"
        exp = start("ablation", params, train_steps=2, batch_size=8, ckpt_every=1, model="LightningDiT-T/1",
                    n_samples=4, sample_steps=2, method="euler", grid=4, svd_rank=8)
    assert exp.dataset == "latents" and exp.dataset_label == "ImageNet 256"
    cfg = exp.standard("gmem")
    assert (cfg.data.dataset, cfg.data.root, cfg.bank.path) == ("latents", str(p["store"]), str(p["bank"]))
    assert cfg.model.repa_depth == 4 and cfg.data.flip_prob == 0.5   # official REPA and flips
    assert cfg.bank.rank is None        # trained on each image's full snippet; sampled from the full bank by default
    run, tr = exp.train_arm(cfg)
    assert tr["steps"] == 2 and math.isfinite(tr["loss"])
    ev = exp.evaluate(run, bank_rank=8)   # Table 4's SVD row: the same network sampled from the rank-8 bank
    assert math.isfinite(ev["fid"]) and ev["fid"] > 0 and ev["n"] == 4 and ev["nfe"] == 2
    assert ev["sample_bank_rank"] == 8
    from PIL import Image
    assert Image.open(ev["grid_path"]).size[0] >= 2 * SIZE                      # decoded 32 px images, not latents
    assert exp.evaluate(run, bank_rank=8)["fid"] == ev["fid"]                   # cached
    # the experiment's images are the store's tokenizer applied to the model's de-normalised latents
    r = load_run(run, device="cpu")
    assert not r.bank.rank and len(r.bank) == N_IMAGES           # the given full bank: the arm trained on it
    assert exp.evaluate(run)["sample_bank_rank"] == 0   # the full bank (the default, as the authors' configs) is a separate evaluation
    x = next(generate(r, 2, seed=0, steps=2, mode="sde", method="euler"))
    assert x.shape == (2, 4, 16, 16)
    imgs = decode_samples(r, x)
    assert imgs.shape == (2, 3, SIZE, SIZE) and imgs.min() >= -1 and imgs.max() <= 1
    torch.testing.assert_close(imgs, LatentDecoder.for_store(p["store"])(x))


def test_cli_sample_decodes_a_latent_run(paper_inputs, tmp_path):
    from gmem.train import train
    from gmem.config import get_preset
    p = paper_inputs
    cfg = get_preset("imagenet256-lightningdit-b").override({
        "data.root": str(p["store"]), "bank.path": str(p["bank"]), "model.name": "LightningDiT-T/1", "steps": 1,
        "batch_size": 4, "ckpt_every": 1, "device": "cpu", "precision": "fp32", "sample.every": 0})
    train(cfg, tmp_path / "run", progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "grid.png"
    cmd = [sys.executable, "-m", "gmem.cli", "sample", "--ckpt", str(tmp_path / "run"), "--out", str(out), "--n", "4",
           "--steps", "2", "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    assert Image.open(out).size == (2 * SIZE + 3 * 2, 2 * SIZE + 3 * 2)          # 2x2 grid of 32 px images, padding 2
    # weights that moved since extraction: the recorded path fails with a message, --tokenizer-weights fixes it
    moved = p["dir"] / "vae-moved"
    p["vae"].rename(moved)
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode != 0 and "huggingface-cli download" in r.stderr
        r = subprocess.run(cmd + ["--tokenizer-weights", str(moved)], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        moved.rename(p["vae"])


def test_quality_notebook_at_paper_preset_on_a_latent_store(paper_inputs, tmp_path):
    "nbs/quality.ipynb at preset paper (its default trainer preset, the official rank-64 bank) with toy sizes."
    import papermill as pm
    p = paper_inputs
    params = dict(preset="paper", data_root=str(p["store"]), bank_path=str(p["bank"]), fid_stats=str(p["stats"]),
                  out_dir=str(tmp_path / "quality"), cache_dir=str(tmp_path / "cache"), methods=["gmem"],
                  model="LightningDiT-T/1", batch_size=8, train_steps=2, n_samples=4, sample_steps=2, device="cpu",
                  num_threads=1)
    pm.execute_notebook(str(ROOT / "nbs" / "quality.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(ROOT), progress_bar=False, log_output=False)
    doc = json.loads((tmp_path / "quality" / "paper" / "metrics.json").read_text())
    rows = {r["label"]: r for r in doc["metrics"]["rows"]}
    assert {"ImageNet 256: GMem", "ImageNet 256: real images (FID floor at N=4)"} <= set(rows), set(rows)
    assert rows["ImageNet 256: GMem"]["paper_fid"] == 1.53
    for r in rows.values(): assert math.isfinite(r["fid"])
    assert doc["config"]["params"]["paper_preset"] == ""                       # default: PAPER_RUNS["quality"]
    cmd = doc["command"]
    assert "-p preset paper" in cmd and "-p paper_preset imagenet256-lightningdit-xl" in cmd and "-p bank_path" in cmd
    assert (tmp_path / "quality" / "paper" / "samples_gmem.png").exists()


def test_bank_bound_to_its_latent_store(paper_inputs):
    "The store records the images it came from, the bank too: they match. A bank with its rows shuffled is refused by "
    "the stored snippets (each item must find its own row), and a bank of other images by the recorded identity."
    from gmem.bank import MemoryBank
    from gmem.tokenizers import LatentDataset
    from gmem.factory import check_bank_data
    from gmem.config import DataConfig
    p = paper_inputs
    ld, bank = LatentDataset(p["store"], flip_prob=0.0), MemoryBank.load(p["bank"])
    assert ld.meta["source"]["order_sha256"] == bank.meta["data"]["order_sha256"]
    cfg = DataConfig(dataset="latents", root=str(p["store"]))
    check_bank_data(bank, ld, p["bank"], cfg)                                    # accepted, no warning
    shuffled = bank.subset(torch.randperm(len(bank), generator=torch.Generator().manual_seed(0)))   # same meta
    with pytest.raises(ValueError, match="does not hold this latent store's snippets"):
        check_bank_data(shuffled, ld, p["bank"], cfg)
    other = MemoryBank(bank.tensors, labels=bank.labels,
                       meta={**bank._meta, "data": {**bank.meta["data"], "order_sha256": "0" * 64}})
    with pytest.raises(ValueError, match="other items or another order"):
        check_bank_data(other, ld, p["bank"], cfg)
