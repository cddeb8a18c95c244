"""Issue 35 across modules: what works on digits works on emoji, through the same code. A real `gmem train --preset
emoji-smoke` process (the `name` bank), `gmem sample`, `gmem bank build --data emoji --encoder name`, the diffusers
pipeline, interpolation between two concepts, a new concept from its name alone, and new images projected into a pixel
(PCA) bank. Needs the emoji data (`gmem data fetch emoji`; the Makefile's test target fetches it first).
"""
import os, subprocess, sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("emoji")   # module fixtures built once: tests/conftest.py
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
torch.set_num_threads(1)


def _gmem(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "gmem.cli", *map(str, args)], env=ENV, capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def emoji_root():
    from gmem.data import emoji_root as resolve
    root = resolve(None)
    if not (root / "fetch.json").exists():
        pytest.fail(f"the emoji data is missing under {root}: run `gmem data fetch emoji` (make test does it first)")
    return root


@pytest.fixture(scope="module")
def name_run(tmp_path_factory, emoji_root):
    "`gmem train --preset emoji-smoke --steps 3`: SiT-T/2 on 256 training drawings with the `name` bank."
    out = tmp_path_factory.mktemp("emoji") / "run"
    _gmem("train", "--preset", "emoji-smoke", "--out", out, "--steps", 3, "--device", "cpu", "--no-progress")
    return out


def test_train_and_sample_with_the_name_bank(name_run, tmp_path):
    from gmem.bank import MemoryBank
    from gmem.config import TrainConfig
    cfg = TrainConfig.from_yaml(name_run / "config.yaml")
    assert (cfg.data.dataset, cfg.bank.encoder, cfg.data.split) == ("emoji", "name", "train")
    bank = MemoryBank.load(name_run / "bank.safetensors")
    assert (len(bank), bank.dim) == (256, 384) and bank.meta["encoder"] == "name"
    _gmem("sample", "--ckpt", name_run, "--out", tmp_path / "grid.png", "--n", 4, "--steps", 2)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_bank_build_name_rows_are_one_snippet_per_concept(tmp_path, emoji_root):
    "`gmem bank build --data emoji --encoder name`: both artists and every skin tone of a concept share its row."
    from gmem.bank import MemoryBank
    from gmem.data import EmojiDataset
    out = tmp_path / "names.safetensors"
    _gmem("bank", "build", "--data", "emoji", "--encoder", "name", "--image-size", 32, "--out", out, "--no-progress")
    bank, ds = MemoryBank.load(out), EmojiDataset(image_size=32)
    assert (len(bank), bank.dim) == (7572, 384)
    items = ds.items
    g = items.index[(items["artist"] == "google")][:50].tolist()
    twins = [int(items.index[(items["artist"] == "twitter") & (items["unified"] == items.loc[i, "unified"])][0]) for i in g]
    torch.testing.assert_close(bank.snippets(g), bank.snippets(twins))     # a name says nothing about the artist
    assert bank.meta["distinct_names"] == items["name"].nunique()


def test_pipeline_interpolation_and_a_new_concept_from_its_name(name_run):
    from gmem.pipeline import GMemPipeline
    from gmem.inference import load_run
    from gmem.manipulate import interpolation_strip
    from gmem.conditioning import sample_snippets
    from gmem.encoders import NameEncoder
    with pytest.warns(UserWarning, match="encoder 'name' cannot be exported"):     # it reads names, not images
        pipe = GMemPipeline.from_run(name_run)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_images=2, generator=torch.Generator().manual_seed(0), output_type="pt", sampler=dict(steps=2))
    assert out.images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="images cannot be used as conditions"):   # no image projection into a name bank
        pipe(snippets=torch.zeros(1, 3, 32, 32), output_type="pt", sampler=dict(steps=2))
    run = load_run(name_run, device="cpu")
    strip = interpolation_strip(run, run.bank, 0, 1, seeds=[0], steps=2, mode="ode", method="euler")
    assert strip.shape[:2] == (1, 11) and torch.isfinite(strip).all()    # s_1, the 9 interpolants of Fig. 8, s_2
    s = torch.nn.functional.normalize(NameEncoder().encode_names(["unicorn face"]), dim=1)   # training-free: a name
    x = sample_snippets(run, s, [0], steps=2, mode="ode", method="euler")
    assert x.shape == (1, 3, 32, 32) and torch.isfinite(x).all()


def test_new_images_project_into_a_pixel_bank(tmp_path, emoji_root):
    "A PCA-bank emoji run: held-out drawings (concepts it never saw) become snippets of its bank (eq. 10)."
    from gmem.data import EmojiDataset
    from gmem.pipeline import GMemPipeline
    out = tmp_path / "pca"
    _gmem("train", "--preset", "emoji-smoke", "--out", out, "--steps", 2, "--device", "cpu", "--no-progress",
          "--set", "bank.encoder=pca", "--set", "bank.pca_dim=16")
    pipe = GMemPipeline.from_run(out)
    pipe.set_progress_bar_config(disable=True)
    x = EmojiDataset(image_size=32, split="heldout")[0][0]
    assert pipe.image_snippets(x).shape == (1, 16)
    y = pipe(snippets=x, seeds=[3], sampler=dict(mode="ode", method="euler", steps=2), output_type="pt").images
    assert y.shape == (1, 3, 32, 32)


def test_held_out_concepts_never_train_nor_enter_a_bank(name_run, emoji_root):
    "The arms' data, their banks and their encoders' fits (all built from it) hold no drawing of a held-out concept."
    from gmem.bank import MemoryBank
    from gmem.config import TrainConfig
    from gmem.data import EmojiDataset
    from gmem.factory import build_dataset
    from gmem.protocol import scale_for, standard_arm
    held = set(EmojiDataset(image_size=32, split="heldout").items["concept"])
    for arm in ("gmem", "sit"):
        cfg = standard_arm(scale_for("emoji-cpu"), arm, preset="emoji-cpu")
        ds = build_dataset(cfg.data)                      # what training, the bank build and the encoder fits read
        assert held and not held & set(ds.items["concept"]) and len(ds) + 1516 == 7572
    cfg = TrainConfig.from_yaml(name_run / "config.yaml")
    sub = build_dataset(cfg.data)                          # emoji-smoke: 256 drawings of the training split
    concepts = set(sub.dataset.items["concept"].iloc[sub.indices])
    assert len(concepts) > 50 and not held & concepts
    bank = MemoryBank.load(name_run / "bank.safetensors")
    from gmem.data import dataset_identity
    assert bank.meta["data"]["order_sha256"] == dataset_identity(sub)["order_sha256"]   # the bank is that data's
