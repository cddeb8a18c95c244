"""Issue 13 across modules: a trained run exported with `gmem export-pipeline` and reloaded offline by diffusers
(`GMemPipeline.from_pretrained`) draws bit-identical images; a latent run exports its autoencoder and decodes like
`gmem.inference.decode_samples`; `gmem train --tensorboard` writes the expected TensorBoard events, from rank 0 only.

One tiny CPU run (the mnist-smoke trainer preset, 3 steps, TensorBoard on, one sample grid) is trained in a real `gmem train`
process and shared by the tests of this file.
"""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("pipeline")   # module fixtures built once: tests/conftest.py
import torch

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
torch.set_num_threads(1)


def _gmem(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "gmem.cli", *map(str, args)], env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    "A trained run directory: `gmem train --preset mnist-smoke --steps 3 --tensorboard` with a sample grid at step 3."
    out = tmp_path_factory.mktemp("pipeline") / "run"
    _gmem("train", "--preset", "mnist-smoke", "--out", out, "--steps", 3, "--device", "cpu", "--no-progress", "--tensorboard",
          "--set", "sample.every=3", "--set", "sample.steps=2")
    return out


# ---- diffusers pipeline -------------------------------------------------------------------------------------
def test_export_pipeline_reloads_offline_bit_identical(smoke_run, tmp_path):
    "`gmem export-pipeline RUN DIR`, then `GMemPipeline.from_pretrained(DIR)(num_images=4, generator=...)` in a fresh offline process."
    from gmem.pipeline import GMemPipeline
    d = tmp_path / "pipe"
    r = _gmem("export-pipeline", smoke_run, d)
    assert "GMemPipeline.from_pretrained" in r.stdout
    assert sorted(p.name for p in d.iterdir()) == ["bank", "encoder", "model_index.json", "network"]
    assert (d / "network" / "diffusion_pytorch_model.safetensors").exists() and (d / "bank" / "bank.safetensors").exists()
    assert not list(d.rglob("*.bin")) and not list(d.rglob("*.pt"))                      # safetensors only
    script = textwrap.dedent(f'''
        import torch
        torch.set_num_threads(1)
        from gmem.pipeline import GMemPipeline
        pipe = GMemPipeline.from_pretrained({str(d)!r})
        pipe.set_progress_bar_config(disable=True)
        out = pipe(num_images=4, generator=torch.Generator().manual_seed(0))
        assert len(out.images) == 4 and all(im.size == (32, 32) for im in out.images), out.images
        pt = pipe(num_images=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
        torch.save(dict(pt=pt, seeds=out.seeds, idx=out.bank_indices), {str(tmp_path / "reloaded.pt")!r})
    ''')
    r = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "reloaded.pt", weights_only=True)
    # the pipeline built straight from the run (never saved) draws the same bits for the same generator
    pipe = GMemPipeline.from_run(smoke_run)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(num_images=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.equal(ref.images, got["pt"]) and ref.seeds == got["seeds"] and torch.equal(ref.bank_indices, got["idx"])
    assert ref.images.shape == (4, 3, 32, 32) and 0 <= ref.images.min() and ref.images.max() <= 1


def test_pipeline_draws_what_gmem_sample_draws(smoke_run):
    "Given gmem sample's seeds (range(n)) and sampler, the pipeline's images are `generate` + `decode_samples`, bit for bit."
    from gmem.pipeline import GMemPipeline
    from gmem.inference import load_run, generate, decode_samples
    pipe = GMemPipeline.from_run(smoke_run)
    pipe.set_progress_bar_config(disable=True)
    got = pipe(4, seeds=range(4), sampler=dict(mode="sde", method="euler", steps=3), output_type="pt").images
    run = load_run(smoke_run, device="cpu")
    ref = decode_samples(run, next(generate(run, 4, seed=0, steps=3, mode="sde", method="euler")))
    assert torch.equal(got, (ref * 0.5 + 0.5).clamp(0, 1))
    # conditions: an image through the run's PCA encoder (eq. 10 / exact row), a row, an interpolation
    from gmem.data import Mnist5kDataset
    from gmem.inference import run_encoder
    x = Mnist5kDataset(image_size=32)[0][0]
    ode = dict(mode="ode", method="euler", steps=2)
    by_image = pipe(snippets=x, sampler=ode, seeds=[5], output_type="pt").images
    enc = run_encoder(smoke_run)
    torch.testing.assert_close(pipe.image_snippets(x), torch.nn.functional.normalize(enc(x[None])[0], dim=1))  # full bank: exact row
    assert by_image.shape == (1, 3, 32, 32)
    sweep = pipe(2, snippets=(0, 1, 0.5), sampler=ode, generator=torch.Generator().manual_seed(1), output_type="np")
    assert sweep.images.shape == (2, 32, 32, 3) and sweep.bank_indices is None


def test_one_default_sampler_for_generate_gmem_sample_and_the_pipeline(smoke_run, tmp_path):
    "No sampler given: `generate(run, n, seed=0)`, `gmem sample` and `pipe(seeds=range(n))` draw the same images (DEFAULT_SAMPLER)."
    from PIL import Image
    from torchvision.utils import save_image
    from gmem.pipeline import GMemPipeline
    from gmem.inference import load_run, generate, decode_samples
    from gmem.samplers import DEFAULT_SAMPLER, SAMPLER_PRESETS, sampler_settings
    assert sampler_settings(None) == SAMPLER_PRESETS[DEFAULT_SAMPLER] and sampler_settings(None).nfe == 99
    n = 4
    run = load_run(smoke_run, device="cpu")
    ref = decode_samples(run, torch.cat(list(generate(run, n, seed=0, batch_size=n))))
    pipe = GMemPipeline.from_run(smoke_run)
    pipe.set_progress_bar_config(disable=True)
    got = pipe(seeds=range(n), output_type="pt").images
    assert torch.equal(got, (ref * 0.5 + 0.5).clamp(0, 1))
    _gmem("sample", "--ckpt", smoke_run, "--out", tmp_path / "cli.png", "--n", n, "--nrow", n, "--device", "cpu")
    save_image((ref.clamp(-1, 1) + 1) / 2, tmp_path / "ref.png", nrow=n, format="png")   # as `gmem sample` writes its grid
    import numpy as np
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(Image.open(tmp_path / "ref.png")))
    # an explicit sampler differs (the default really is the SDE, not the Euler ODE)
    assert not torch.equal(decode_samples(run, next(generate(run, n, seed=0, sampler="euler-ode"))), ref)


def test_pipeline_to_device_and_cpu_offload(smoke_run):
    "`pipe.to(...)` moves network and bank; a dtype cast leaves the bank alone; offload needs accelerate."
    from gmem.pipeline import GMemPipeline
    pipe = GMemPipeline.from_run(smoke_run).to("cpu")
    assert pipe.device.type == "cpu" and pipe.bank.bank.device.type == "cpu"
    pipe.to(torch.bfloat16)
    assert pipe.network.dtype == torch.bfloat16 and pipe.bank.bank.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    x = pipe(2, seeds=[0, 1], sampler=dict(mode="ode", method="euler", steps=2), output_type="pt").images
    assert x.dtype == torch.float32 and torch.isfinite(x).all()        # bf16 network under autocast, fp32 solver
    if torch.cuda.is_available():
        pipe.to("cuda")
        assert pipe.bank.bank.device.type == "cuda" and pipe.network.device.type == "cuda"
    try:
        import accelerate  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="accelerate"):
            pipe.enable_model_cpu_offload()


# a tiny latent run: random-weight AutoencoderKL (f = 2), PCA bank encoder saved to a file (so it exports)
SIZE, N_IMAGES = 32, 32


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    from diffusers import AutoencoderKL
    from gmem.bankbuild import build_bank
    from gmem.data import Mnist5kDataset, limit_dataset
    from gmem.encoders import PCAEncoder
    from gmem.tokenizers import SDVAETokenizer, extract_latents
    from gmem.train import train
    from gmem.config import get_preset
    d = tmp_path_factory.mktemp("latent-pipeline")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, layers_per_block=1,
                  norm_num_groups=32, sample_size=SIZE).eval().save_pretrained(d / "vae")
    ds = limit_dataset(Mnist5kDataset(image_size=SIZE), N_IMAGES)
    pca = PCAEncoder.fit(torch.stack([ds[i][0] for i in range(len(ds))]), dim=16, pool_size=8)
    pca.save(d / "pca.safetensors")
    tok = SDVAETokenizer.from_pretrained(d / "vae", local_files_only=True)
    extract_latents(ds, tok, d / "store", batch_size=16, shard_size=32, progress=False)
    build_bank(ds, pca, d / "bank.safetensors", batch_size=16, progress=False)
    cfg = get_preset("imagenet256-lightningdit-b").override({
        "data.root": str(d / "store"), "bank.path": str(d / "bank.safetensors"), "bank.encoder": "pca",
        "bank.encoder_weights": str(d / "pca.safetensors"), "model.name": "LightningDiT-T/1", "model.repa_depth": None,
        "steps": 1, "batch_size": 4, "ckpt_every": 1, "device": "cpu", "precision": "fp32", "sample.every": 0})
    train(cfg, d / "run", progress=False)
    return d / "run"


def test_latent_run_exports_its_autoencoder(latent_run, tmp_path):
    "A latent run's pipeline holds the store's AutoencoderKL and statistics and decodes exactly as decode_samples."
    from diffusers import AutoencoderKL
    from gmem.cli import main
    from gmem.pipeline import GMemPipeline
    from gmem.inference import load_run, generate, decode_samples
    d = tmp_path / "pipe"
    assert main(["export-pipeline", str(latent_run), str(d)]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["autoencoder", "bank", "encoder", "model_index.json", "network"]
    info = json.loads((d / "model_index.json").read_text())
    assert info["autoencoder"] == ["diffusers", "AutoencoderKL"] and len(info["run_info"]["latents"]["mean"]) == 4
    pipe = GMemPipeline.from_pretrained(d)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.autoencoder, AutoencoderKL) and pipe.run_info["image_size"] == SIZE
    sde = dict(mode="sde", method="euler", steps=2)
    got = pipe(2, seeds=[0, 1], sampler=sde, output_type="pt").images
    run = load_run(latent_run, device="cpu")
    ref = decode_samples(run, next(generate(run, 2, seed=0, **sde)))
    assert got.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(got, (ref * 0.5 + 0.5).clamp(0, 1))
    lat = pipe(2, seeds=[0, 1], sampler=sde, output_type="latent").images
    assert lat.shape == (2, 4, SIZE // 2, SIZE // 2)
    from gmem.data import Mnist5kDataset
    im = pipe(snippets=Mnist5kDataset(image_size=SIZE)[3][0][None], sampler=sde, seeds=[2], output_type="pt").images
    assert im.shape == (1, 3, SIZE, SIZE)                               # an image as condition, via the exported encoder


# ---- TensorBoard --------------------------------------------------------------------------------------------
def test_train_tensorboard_events(smoke_run):
    "The events file holds the loss terms, lr, grad norm, EMA decay and throughput per step, and the sample grid."
    from gmem.tblog import read_scalars
    from gmem.train import read_metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert len(list((smoke_run / "tb").glob("events.out.tfevents.*"))) == 1
    sc = read_scalars(smoke_run / "tb")
    want = {"loss/total", "loss/mse", "loss/cos", "loss/repa", "train/lr", "train/grad_norm", "train/ema_decay",
            "perf/images_per_s"}
    assert want <= set(sc), sorted(sc)
    rows = read_metrics(smoke_run / "metrics.csv")                         # the CSV stays the record
    assert [x for x, _ in sc["loss/total"]] == [r["images"] for r in rows] == [8, 16, 24]
    for (_, v), r in zip(sc["loss/total"], rows): assert v == pytest.approx(r["loss"], rel=1e-6)
    for (_, v), r in zip(sc["train/grad_norm"], rows): assert v == pytest.approx(r["grad_norm"], rel=1e-6)
    acc = EventAccumulator(str(smoke_run / "tb")); acc.Reload()
    assert acc.Tags()["images"] == ["samples"] and [e.step for e in acc.Images("samples")] == [24]


DDP_SCRIPT = textwrap.dedent('''
    import sys, torch, torch.nn as nn
    from gmem.train import train
    from gmem.config import TrainConfig, DataConfig, BankConfig, ModelSettings
    torch.set_num_threads(1)
    class Net(nn.Module):
        def __init__(self):
            super().__init__(); self.net = nn.Linear(17, 16)
        def forward(self, x, t, s): return self.net(torch.cat([x.flatten(1), t[:, None]], 1)).view_as(x)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ds = torch.utils.data.TensorDataset(x, torch.zeros(32, dtype=torch.long))
    cfg = TrainConfig(data=DataConfig(), bank=BankConfig(encoder="stand-in"), model=ModelSettings(name="stand-in", cond="none"),
                      batch_size=8, steps=3, ckpt_every=3, precision="fp32", device="cpu", tensorboard=True)
    torch.manual_seed(0)
    train(cfg, sys.argv[1], progress=False, model=Net(), dataset=ds)
''')


def test_tensorboard_rank0_only_under_torchrun(tmp_path):
    "torchrun with 2 CPU processes (gloo) and tensorboard on: one events file, one scalar per step."
    from gmem.tblog import read_scalars
    script, out = tmp_path / "ddp_tb.py", tmp_path / "ddp"
    script.write_text(DDP_SCRIPT)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(29700 + os.getpid() % 1000), str(script), str(out)], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert [x for x, _ in read_scalars(out / "tb")["loss/total"]] == [8, 16, 24]
