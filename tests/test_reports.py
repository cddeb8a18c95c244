"""The paper-table notebooks (nbs/<name>.ipynb) run end to end through papermill at a tiny smoke size.

Each run trains real (tiny) arms, samples them and scores real FID; the test then reads the metrics.json the
notebook wrote and checks its structure: present, finite, the right rows, provenance and the regenerating command -
not the values. Arms are cached in one folder for the session, so notebooks that share an arm (the GMem reference
run appears in every table) train it once, as they do in reports/.
"""
import json, math, os
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["ablation", "efficiency", "nfe_sweep", "backbones", "quality", "frontier", "gap", "emoji-pilot"]
# smaller than the smoke preset: 4 optimizer steps, 8 samples per FID against 16 real images, 4 sampler steps
TINY = dict(train_steps=4, n_samples=8, n_ref=16, num_threads=1)
EXTRA = {"ablation": dict(sample_steps=4), "efficiency": dict(ckpt_every=2, sample_steps=4, encoders=["pca16"]),
         "nfe_sweep": dict(nfe=[2, 4]), "backbones": dict(sample_steps=4), "quality": dict(sample_steps=4),
         "frontier": dict(sample_steps=4, encoders=["pca16"], workers=2),   # two arms side by side (Experiment.prefetch)
         "gap": dict(sample_steps=4, widths=[8]),
         "emoji-pilot": dict(preset="emoji-smoke", sample_steps=4, banks=["name", "pca16"], workers=2)}   # the emoji data
ROWS = {  # labels every default sweep must produce
    "ablation": {"reference", "no_svd", "half_bank", "noise", "random", "ratio_0", "ratio_0.3", "ode"},
    "efficiency": {"GMem pca16 (final)", "SiT (class-conditional) (final)", "SiT (unconditional) (final)",
                   "speed-up GMem pca16 vs SiT (class-conditional)",      # equal budget, and the continued class seed
                   "speed-up GMem pca16 vs SiT (class-conditional), continued to 256 images"},
    "nfe_sweep": {f"{m} @ NFE {k} ({s})" for m in ("GMem", "SiT (class-conditional)")
                  for s, ks in (("Euler", (2, 4)), ("SDE", (1, 3))) for k in ks},   # official SDE: NFE 2 steps - 1
    "backbones": {"SiT-T/2 / pixels", "LightningDiT-T/1 / pixels"},
    "frontier": {"GMem pca16 mask 0", "GMem pca16 mask 0.4", "SiT (class-conditional)", "SiT (unconditional)"},
    "gap": {f"GMem PCA-8 EMA {e} {b} bank" for e in ("0.99", "0.999") for b in ("full", "half")}
           | {"SiT (class-conditional) EMA 0.99", "SiT (class-conditional) EMA 0.999"},
    "emoji-pilot": {"GMem name", "GMem pca16", "SiT (class-conditional): category", "GMem name, patch 4"},
    "quality": {"MNIST-5k (16x16): GMem", "MNIST-5k (16x16): SiT (class-conditional)",
                "MNIST-5k (16x16): real training images (FID floor at N=8)"},
}


@pytest.fixture(scope="session")
def arm_cache(shared_dir):
    "The report notebooks' arm cache, shared by the run's pytest workers (tests/conftest.py)."
    (shared_dir / "arms").mkdir(exist_ok=True)
    return shared_dir / "arms"


def execute(name, tmp_path, **params):
    "Run nbs/<name>.ipynb with `params` into tmp_path; returns the executed notebook path."
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(str(ROOT / "nbs" / f"{name}.ipynb"), str(out), parameters=params, kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False, log_output=False)
    return out


def finite_numbers(x, where="metrics"):
    if isinstance(x, float): assert math.isfinite(x), f"{where} = {x}"
    elif isinstance(x, dict):
        for k, v in x.items(): finite_numbers(v, f"{where}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x): finite_numbers(v, f"{where}[{i}]")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_report_notebook_smoke(name, tmp_path, arm_cache):
    out_dir = tmp_path / name
    execute(name, tmp_path, out_dir=str(out_dir), cache_dir=str(arm_cache), **TINY, **EXTRA[name])
    doc = json.loads((out_dir / "metrics.json").read_text())
    m = doc["metrics"]
    finite_numbers(m)
    labels = {r["label"] for r in m["rows"]}
    assert ROWS[name] <= labels, f"missing rows {ROWS[name] - labels}"
    for r in m["rows"]:   # a censored speed-up with no bound either way has no value, and says so
        assert (isinstance(r["fid"], float) and r["fid"] >= 0) or (r["fid"] is None and r.get("censored")), r
    assert m["preset"] == EXTRA[name].get("preset", "smoke") and m["summary"] and isinstance(m["checks"], list)
    assert m["compute_seconds"] > 0          # the arms' recorded costs, counted even when they came from the cache
    for c in m["checks"]: assert isinstance(c["holds"], bool) and c["claim"]
    assert doc["command"].startswith(f"python tools/run_report.py {name}")
    assert doc["provenance"]["commit"] and doc["config"]["params"]["out_dir"] == str(out_dir)
    assert list(out_dir.glob("*.csv")) and list(out_dir.glob("*.png")) and (out_dir / "summary.md").exists()


def test_one_ablation_row(tmp_path, arm_cache):
    "`-p mask_ratio 0.3` runs only that row (the reference with mask ratio 0.3)."
    out_dir = tmp_path / "ablation"
    execute("ablation", tmp_path, out_dir=str(out_dir), cache_dir=str(arm_cache), mask_ratio=0.3, **TINY,
            **EXTRA["ablation"])
    doc = json.loads((out_dir / "metrics.json").read_text())
    assert [r["label"] for r in doc["metrics"]["rows"]] == ["ratio_0.3"]
    assert doc["metrics"]["compute_seconds"] > 0    # cached or not, the arm's recorded cost counts
    assert "-p mask_ratio 0.3" in doc["command"]


def test_wrong_parameter_fails_in_the_first_cells(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'mask_ratoi'"):
        execute("ablation", tmp_path, out_dir=str(tmp_path / "a"), mask_ratoi=0.4)
    with pytest.raises(pm.PapermillExecutionError, match="parameter 'train_steps' = 'ten' has type str"):
        execute("efficiency", tmp_path, out_dir=str(tmp_path / "e"), train_steps="ten")
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()


def test_paper_preset_without_data_fails_early(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="-p data_root PATH"):
        execute("quality", tmp_path, out_dir=str(tmp_path / "q"), preset="paper")
    assert not (tmp_path / "q" / "paper" / "metrics.json").exists()


def test_runner_and_index(tmp_path, monkeypatch):
    "tools/run_report.py --index rebuilds reports/README.md from whatever metrics exist (here: a copy)."
    import importlib.util, shutil
    from gmem.report import index_markdown
    from gmem.paper import REPORTS
    reports = tmp_path / "reports"
    for name in REPORTS:
        src = ROOT / "reports" / name / "metrics.json"
        if src.exists(): (reports / name).mkdir(parents=True); shutil.copy(src, reports / name / "metrics.json")
    text = index_markdown(reports)
    for name, info in REPORTS.items(): assert info["table"] in text
    spec = importlib.util.spec_from_file_location("run_report", ROOT / "tools" / "run_report.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    assert mod.parse_value("0.4") == 0.4 and mod.parse_value("[10, 25]") == [10, 25]
    assert mod.parse_value("None") is None and mod.parse_value("zero") == "zero"


def test_index_flags_reports_of_an_earlier_protocol(tmp_path):
    "A cpu report whose metrics.json predates the newest protocol version in the index is labelled, not mixed in."
    from gmem.report import index_markdown, write_metrics
    check = dict(claim="GMem beats the class-conditional SiT", detail="gap +3", kind="direction", verdict="holds", holds=True, gap=3.0,
                 lo=1.0, hi=5.0, detectable=2.0, seeds=[3, 3], role="primary")
    rows = [dict(label="GMem", fid=10.0, fid_train=9.0)]
    write_metrics(tmp_path / "frontier" / "metrics.json", dict(preset="cpu", protocol=2, rows=rows, checks=[check]))
    write_metrics(tmp_path / "ablation" / "metrics.json", dict(preset="cpu", rows=rows, checks=[check]))
    text = index_markdown(tmp_path)
    assert "| cpu, earlier protocol (v1) |" in text and "| cpu |" in text
    assert text.count("Made under an earlier protocol (v1") == 1
    # a protocol-2 report scores held-out digits even where its rows carry no training-digit FID (the gap factorial)
    write_metrics(tmp_path / "gap" / "metrics.json", dict(preset="cpu", protocol=2, rows=[dict(label="GMem", fid=10.0)],
                                                           checks=[check]))
    assert "| `gap` | cpu | primary |" in index_markdown(tmp_path)


def test_index_opens_with_the_frontier_findings(tmp_path):
    "reports/README.md's first section states per encoder what the frontier measured (from its metrics, not by hand)."
    from gmem.report import index_markdown, write_metrics
    per = [dict(encoder="pca32", mask_ratio=0.4, role="primary", fid=60.0, ct_pixel=1.0, beats_class="holds",
                copies_no_more="holds", does_not_copy="holds", not_mere_memorisation="holds"),
           dict(encoder="ssl64", mask_ratio=0.4, role="primary", fid=80.0, ct_pixel=5.0, beats_class="contradicted",
                copies_no_more="holds", does_not_copy="holds", not_mere_memorisation="holds"),
           dict(encoder="pca32", mask_ratio=0.0, role="secondary", fid=40.0, ct_pixel=-3.0, beats_class="holds",
                copies_no_more="contradicted", does_not_copy="contradicted", not_mere_memorisation="contradicted")]
    rows = [dict(label="SiT (class-conditional)", fid=70.0, ct_pixel=2.0)]
    write_metrics(tmp_path / "frontier" / "metrics.json",
                  dict(preset="cpu", protocol=2, rows=rows, checks=[], per_encoder=per, seeds=[0, 1, 2]))
    text = index_markdown(tmp_path)
    head = text[text.index("## What the runs found"):text.index("![the copying frontier]")]
    assert "beats it at equal training with: pca32 (FID 60.0, C_T +1.0); is beaten with: ssl64" in head
    assert "FID 70.0 at pixel C_T +2.0" in head and "3 training seeds" in head
    assert "pca32: FID 40.0, C_T -3.0 (beats the class arm: holds; copies no more: contradicted" in head
    # the gap factorial's reading follows the frontier's, from its metrics
    eff = [dict(factor="width", effect=4.5, lo=2.5, hi=6.5, carries="carries the gap"),
           dict(factor="EMA on the gap", effect=0.4, lo=-1.6, hi=2.2, carries="not shown")]
    write_metrics(tmp_path / "gap" / "metrics.json", dict(preset="cpu", protocol=2, rows=rows, checks=[], effects=eff,
                                                           seeds=[0, 1, 2], carry_threshold=2.0))
    text = index_markdown(tmp_path)
    assert "carried by **width**. width +4.5 [+2.5, +6.5]; EMA on the gap +0.4 [-1.6, +2.2]." in text
    assert text.index("![the copying frontier]") < text.index("What carries GMem's gap") < text.index("![the gap factorial]")
    # the training speed-up follows, each primary reading with its verdict, and the curves' figure once it exists
    sp = dict(speedup=2.0, lo=1.5, hi=2.6, censored=False, gmem="GMem pca32", role="primary", per_level=[],
              seeds=[3, 2], largest_showable=40.0)
    cens = dict(sp, gmem="GMem ssl64", censored=True, bound="at least", lo=None, hi=None)
    write_metrics(tmp_path / "efficiency" / "metrics.json",
                  dict(preset="cpu", protocol=2, rows=rows, checks=[], design=dict(seeds=[0, 1, 2]),
                       speedup={"GMem pca32 vs SiT (class-conditional), continued": sp,
                                "GMem ssl64 vs SiT (class-conditional), continued": cens,
                                "GMem pca32 vs unconditional": dict(sp, role="secondary")}))
    text = index_markdown(tmp_path)
    line = text[text.index("**Training speed-up**"):].split("\n")[0]
    assert "primary; 3 training seeds per arm" in line and "unconditional" not in line
    assert "GMem pca32 vs SiT (class-conditional), continued: 2.00x [1.50, 2.60] - **holds**" in line
    assert "GMem ssl64 vs SiT (class-conditional), continued: at least 2.00x (censored) - **unresolved**" in line
    assert "efficiency_curve.png" not in text
    (tmp_path / "efficiency" / "efficiency_curve.png").write_bytes(b"png")
    assert "![FID against training images](efficiency/efficiency_curve.png)" in index_markdown(tmp_path)
