"""A smoke-size GMem arm with the self-supervised bank encoder (`bank.encoder: ssl`): it trains, samples, and
conditions on a new image projected with its encoder, through the same entry points as a `pca` arm."""
import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def gmem_cache(tmp_path, monkeypatch):
    "Keep the SSL fit's cache out of the user's $GMEM_CACHE."
    monkeypatch.setenv("GMEM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path / "cache"


def tiny_config(out_steps: int = 4):
    from gmem.config import get_preset
    return get_preset("mnist-smoke").override({
        "bank.encoder": "ssl", "bank.pca_dim": 16,                  # a 16-d SimCLR encoder fitted on the run's digits
        "data.limit": 64, "data.image_size": 16, "data.split": "train", "model.patch_size": 4,
        "steps": out_steps, "batch_size": 8, "ckpt_every": out_steps, "device": "cpu"})


def test_ssl_arm_trains_and_samples(tmp_path, gmem_cache):
    from gmem.train import train
    from gmem.inference import load_run, generate
    from gmem.inference import run_encoder
    from gmem.encoders import SSLEncoder
    from gmem.conditioning import check_encoder, snippets_from_images, sample_snippets
    from gmem.data import mnist5k_images
    torch.set_num_threads(1)
    cfg, run_dir = tiny_config(), tmp_path / "run"
    summary = train(cfg, run_dir, progress=False)
    assert summary["step"] == 4 and torch.isfinite(torch.tensor(summary["loss"]))
    assert (run_dir / "ssl-encoder.safetensors").exists() and len(list(gmem_cache.glob("encoders/ssl-16-*"))) == 1

    run = load_run(run_dir, device="cpu")
    assert run.bank.meta["encoder"] == "ssl-16" and run.bank.dim == 16
    x = torch.cat(list(generate(run, 3, seed=0, steps=2, batch_size=3)))
    assert x.shape == (3, 3, 16, 16) and torch.isfinite(x).all()
    again = torch.cat(list(generate(run, 3, seed=0, steps=2, batch_size=3)))
    assert torch.equal(x, again)                                     # per-sample seeds: the same images

    # new images: the run's own encoder (read back from the run folder) projects them into the bank's space
    enc = run_encoder(run_dir, device="cpu")
    assert isinstance(enc, SSLEncoder)
    check_encoder(run.bank, enc)                                      # same name and fingerprint as the bank's
    new = mnist5k_images("heldout", 16, 2)
    s = snippets_from_images(new, enc)
    assert s.shape == (2, 16)
    y = sample_snippets(run, s, seeds=[0, 1], steps=2)
    assert y.shape == (2, 3, 16, 16) and torch.isfinite(y).all()

    # a second arm on the same digits reuses the cached fit: the same encoder, bit for bit
    run2 = tmp_path / "run2"
    train(tiny_config(2), run2, progress=False)
    assert torch.equal(SSLEncoder.load(run2 / "ssl-encoder.safetensors")(new)[0], enc(new)[0])


def test_ssl_bank_build_cli(tmp_path, gmem_cache):
    "`gmem bank build --encoder ssl` fits (or reads) the encoder and writes a bank recorded as ssl-<dim>."
    from gmem.cli import main
    from gmem.bank import MemoryBank
    out = tmp_path / "bank.safetensors"
    rc = main(["bank", "build", "--data", "mnist5k", "--encoder", "ssl", "--encoder-dim", "8", "--out", str(out),
               "--image-size", "16", "--limit", "48", "--no-progress", "--device", "cpu"])
    assert rc == 0
    b = MemoryBank.load(out)
    assert (len(b), b.dim, b.meta["encoder"]) == (48, 8, "ssl-8")
    assert (tmp_path / "bank.ssl-encoder.safetensors").exists()
