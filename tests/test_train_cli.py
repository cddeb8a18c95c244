"""Cross-module tests of gmem.train and gmem.cli: real processes (kill -9 + resume, torchrun/gloo DDP, the CLI)."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}

# A stand-in network/dataset/bank (fast, independent of gmem.model) driven through gmem.train.train in a real process.
SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys, time
    import torch, torch.nn as nn
    from gmem.train import train
    from gmem.config import TrainConfig, DataConfig, BankConfig, ModelSettings, OptimConfig

    out, steps, resume, slow, same = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4]), sys.argv[5] == "1"
    torch.set_num_threads(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), dict(snippet_dim=6))()
            self.net = nn.Sequential(nn.Linear(16 + 1 + 6, 32), nn.SiLU(), nn.Dropout(0.1), nn.Linear(32, 16))
            self.first_input = None
        def forward(self, x, t, s):
            if self.first_input is None: self.first_input = hashlib.sha256(x.detach().numpy().tobytes()).hexdigest()
            time.sleep(slow)
            return self.net(torch.cat([x.flatten(1), t[:, None], s], 1)).view_as(x)

    class Bank:
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            s = torch.randn(n, 6, generator=g) if not same else torch.ones(n, 6)
            self.s, self.dim, self.device = s / s.norm(dim=1, keepdim=True), 6, torch.device("cpu")
        def __len__(self): return len(self.s)
        def snippets(self, idx): return self.s[idx]
        def fingerprint(self): return hashlib.sha256(self.s.numpy().tobytes()).hexdigest()
        def to(self, d): return self

    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    if same: x = x[:1].expand(64, -1, -1, -1).clone()   # identical items: only the noise can differ between ranks
    ds = torch.utils.data.TensorDataset(x, torch.zeros(64, dtype=torch.long))
    cfg = TrainConfig(data=DataConfig(), bank=BankConfig(encoder="stand-in"), model=ModelSettings(name="stand-in"),
                      optim=OptimConfig(lr=3e-3, ema_warmup=True), batch_size=8, steps=steps, ckpt_every=5,
                      keep_last=int(os.environ.get("KEEP_LAST", "2")), precision="fp32", device="cpu")
    torch.manual_seed(0)
    net = Net()
    s = train(cfg, out, resume=resume, progress=False, model=net, dataset=ds, bank=Bank(64))
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()
    tasks = "/proc/self/task"                            # gloo's C++ threads still alive (Linux; none elsewhere)
    gloo = sorted(n for n in (open(f"{tasks}/{t}/comm").read().strip() for t in os.listdir(tasks)) if "gloo" in n) \
        if os.path.isdir(tasks) else []
    with open(os.path.join(out, f"rank{s['rank']}.json"), "w") as f:
        json.dump(dict(params=h, first_input=net.first_input, world_size=s["world_size"], step=s["step"],
                       gloo_threads=gloo), f)
''')

def _script(tmp_path):
    p = tmp_path / "standin_train.py"; p.write_text(SCRIPT); return p

def _losses(d):
    lines = (Path(d) / "metrics.csv").read_text().splitlines()
    i = lines[0].split(",").index("loss")
    return [tuple(l.split(",")[:1] + [l.split(",")[i]]) for l in lines[1:]]

def test_kill9_resume_is_bit_exact(tmp_path):
    "A process killed with SIGKILL mid-run and resumed in a fresh process reproduces the uninterrupted loss sequence."
    script, n = _script(tmp_path), 20
    full, part = tmp_path / "full", tmp_path / "part"
    ref = subprocess.Popen([sys.executable, script, full, str(n), "0", "0", "0"], env=ENV)   # uninterrupted, in parallel
    proc = subprocess.Popen([sys.executable, script, part, str(n), "0", "0.05", "0"], env=ENV)
    t0 = time.time()
    while time.time() - t0 < 60:                        # wait until step 7 is logged (checkpoint at 5), then kill -9
        m = part / "metrics.csv"
        if m.exists() and len(m.read_text().splitlines()) > 7: break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert ref.wait(timeout=120) == 0
    assert (part / "checkpoints" / "latest").exists()
    killed_at = len(_losses(part))
    assert killed_at < n, "the run finished before it was killed"
    subprocess.run([sys.executable, script, part, str(n), "1", "0", "0"], env=ENV, check=True, timeout=120)
    assert _losses(part) == _losses(full)                # string-equal: bit for bit
    assert [int(s) for s, _ in _losses(part)] == list(range(1, n + 1))

def test_a_longer_run_repeats_the_shorter_one(tmp_path):
    """Nothing in training depends on the total number of steps: a 20-step run's first 10 steps are the 10-step run's,
    loss for loss and weights at step 10 (nbs/efficiency.ipynb reads its continued class runs at T as T-step runs)."""
    import torch
    script = _script(tmp_path)
    for n in (10, 20):
        subprocess.run([sys.executable, script, tmp_path / f"r{n}", str(n), "0", "0", "0"], env={**ENV, "KEEP_LAST": "4"},
                       check=True, timeout=120)
    assert _losses(tmp_path / "r20")[:10] == _losses(tmp_path / "r10")
    a, b = (torch.load(tmp_path / f"r{n}" / "checkpoints" / "step-00000010.pt", map_location="cpu", weights_only=False)
            for n in (10, 20))
    for k in ("model", "ema"):
        assert a[k].keys() == b[k].keys() and all(torch.equal(a[k][j], b[k][j]) for j in a[k])

def test_ddp_two_processes_gloo(tmp_path):
    "torchrun with 2 CPU processes (gloo): identical parameters at the end, different noise on each rank."
    script, out = _script(tmp_path), tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(29500 + os.getpid() % 1000), str(script), str(out), "6", "0", "0", "1"],
                       env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((out / f"rank{i}.json").read_text()) for i in (0, 1))
    # train() destroyed the group for real: gloo's threads were joined before the interpreter's exit (a group pinned by
    # a late `import torch.distributed.nn` kept them alive, and one could abort a finished rank at exit with
    # "terminate called without an active exception": "Tearing the group down" in nbs/api/09d_factory.ipynb)
    assert a["gloo_threads"] == b["gloo_threads"] == [], (a["gloo_threads"], b["gloo_threads"])
    assert a["world_size"] == b["world_size"] == 2 and a["step"] == b["step"] == 6
    assert a["params"] == b["params"]                    # DDP kept the replicas identical
    assert a["first_input"] != b["first_input"]          # same data, so x_t differs only through per-rank noise/t
    assert len(_losses(out)) == 6

def _gmem(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "gmem.cli", *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=timeout)

def test_cli_train_smoke_and_resume(tmp_path, capsys):
    "`gmem train --preset mnist-smoke --out DIR --steps 5` writes 5 metric rows; `--resume --steps 8` continues to 8."
    pytest.importorskip("gmem.model"); pytest.importorskip("gmem.samplers"); pytest.importorskip("gmem.encoders")
    out = tmp_path / "run"
    r = _gmem("train", "--preset", "mnist-smoke", "--out", out, "--steps", 5, "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [int(s) for s, _ in _losses(out)] == [1, 2, 3, 4, 5]
    # a second fresh process with the same seed trains the same model: the initial weights come from the seed
    r = _gmem("train", "--preset", "mnist-smoke", "--out", tmp_path / "again", "--steps", 5, "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _losses(tmp_path / "again") == _losses(out)
    r = _gmem("train", "--preset", "mnist-smoke", "--out", out, "--steps", 8, "--resume", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    losses = _losses(out)
    assert [int(s) for s, _ in losses] == list(range(1, 9))
    assert sum(float(l) for _, l in losses[-3:]) < sum(float(l) for _, l in losses[:3])   # the loss falls
    from gmem.cli import main                            # the rest in-process (saves interpreter start-ups)
    assert main(["train", "--preset", "mnist-smoke", "--out", str(out), "--steps", "9", "--resume", "--set", "optim.lr=0.1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(out), "--out", str(tmp_path / "grid.png"), "--n", "4", "--steps", "3",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0

def test_cli_rejects_bad_inputs_in_one_line(tmp_path):
    "`gmem sample --n -3` and friends: exit code 2, one line naming the option, no traceback (a real process)."
    for args, opt in [(("sample", "--ckpt", tmp_path, "--out", tmp_path / "g.png", "--n", -3), "--n"),
                      (("train", "--preset", "mnist-smoke", "--out", tmp_path / "r", "--steps", 0), "--steps"),
                      (("sample", "--ckpt", tmp_path / "missing", "--out", tmp_path / "g.png"), "--ckpt")]:
        r = _gmem(*args, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert f"argument {opt}" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr

# A run that builds its own bank (PCA encoder, 8 shards of 32 images), started with --resume from the beginning: the
# same command line must start it and continue it. Slow item reads (argv[2] seconds) leave time to kill it mid-build.
BANK_SCRIPT = textwrap.dedent('''
    import functools, sys, time, torch, torch.nn as nn
    import gmem.bankbuild, gmem.factory
    from gmem.train import train
    from gmem.config import TrainConfig, DataConfig, BankConfig, ModelSettings, OptimConfig
    from gmem.data import Mnist5kDataset, limit_dataset
    # 8 shards, the unit of resume: the bank builder as the run's factory calls it
    gmem.factory.build_bank_from_images = functools.partial(gmem.bankbuild.build_bank, shard_size=32)
    out, slow = sys.argv[1], float(sys.argv[2])
    torch.set_num_threads(1)

    class Slow(torch.utils.data.Dataset):
        def __init__(self): self.ds = limit_dataset(Mnist5kDataset(32), 256)
        def __len__(self): return len(self.ds)
        def __getitem__(self, i): time.sleep(slow); return self.ds[i]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), dict(snippet_dim=8))()
            self.net = nn.Linear(3 * 32 * 32 + 1 + 8, 3 * 32 * 32)
        def forward(self, x, t, s): return self.net(torch.cat([x.flatten(1), t[:, None], s], 1)).view_as(x)

    cfg = TrainConfig(data=DataConfig(dataset="mnist5k", limit=256),
                      bank=BankConfig(encoder="pca", pca_dim=8, batch_size=16), model=ModelSettings(name="stand-in"),
                      optim=OptimConfig(lr=3e-3), batch_size=8, steps=4, ckpt_every=2, precision="fp32", device="cpu")
    torch.manual_seed(0)
    train(cfg, out, resume=True, progress=False, model=Net(), dataset=Slow())
''')

def test_kill9_during_bank_building_then_same_command_resumes(tmp_path):
    "kill -9 while the run builds its bank, before any checkpoint: the same command starts again from step 0, reuses the "
    "finished bank shards (and says so), clears the killed writes' temp files, and ends where an uninterrupted run ends."
    script = tmp_path / "bank_run.py"; script.write_text(BANK_SCRIPT)
    full, part = tmp_path / "full", tmp_path / "part"
    ref = subprocess.Popen([sys.executable, script, full, "0"], env=ENV, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen([sys.executable, script, part, "0.01"], env=ENV, stderr=subprocess.PIPE, text=True)
    work = part / "bank.safetensors.shards"
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None and not (work / "shard_00001.json").exists(): time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert "no checkpoint" in proc.stderr.read()                 # the first start already used --resume
    assert ref.wait(timeout=180) == 0
    assert not (part / "bank.safetensors").exists() and not (part / "checkpoints").exists()
    done = len(list(work.glob("shard_*.json")))
    assert 2 <= done < 8, done
    (part / ".bank.safetensors.k1l2m3n4.tmp").write_bytes(b"half")          # temp files of writes killed mid-way
    (part / "checkpoints").mkdir(); (part / "checkpoints" / ".step-00000002.pt.abcdefgh.tmp").write_bytes(b"half")
    r = subprocess.run([sys.executable, script, part, "0"], env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting from step 0" in r.stderr and f"reusing {done} of 8 finished bank shards" in r.stderr, r.stderr
    assert not list(part.rglob(".*.tmp"))
    assert (part / "bank.safetensors").read_bytes() == (full / "bank.safetensors").read_bytes()
    assert _losses(part) == _losses(full) and len(_losses(part)) == 4
