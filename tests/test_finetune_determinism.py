"""Seeded fine-tunes repeat bit for bit (issue 19): the same ``squeeze train --base`` command,
seed and thread count write the same .sqz file.

The model is a small stand-in for the MiniLM fine-tune that issue 19 caught differing between two
runs (0.9294 and 0.9348): token ids through an ``nn.Embedding`` with a padding row, LayerNorm,
dropout (active while training, as BERT's is) and a new linear head, trained in a SORF subspace
against a base checkpoint on two threads. The embedding is large enough that both threads share
its backward (torch parallelises it over rows, the C transpose over blocks).
"""

from __future__ import annotations

import hashlib
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from squeeze import format as fmt
from squeeze_cli.app import main

VOCAB, WIDTH, TOKENS = 2000, 16, 6

MODEL = textwrap.dedent(
    f"""
    import torch
    from torch import nn


    class Tagger(nn.Module):
        def __init__(self, num_classes: int = 2, input_shape=None):
            super().__init__()
            self.embed = nn.Embedding({VOCAB}, {WIDTH}, padding_idx=0)
            self.norm = nn.LayerNorm({WIDTH})
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear({WIDTH}, num_classes)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, T) ids, 0 = padding -> (N, classes)
            ids = ids.long()
            mask = (ids != 0).unsqueeze(-1).float()
            h = self.drop(self.norm(self.embed(ids))) * mask
            return self.head(h.sum(1) / mask.sum(1).clamp_min(1.0))
    """
)


@pytest.fixture
def finetune(tmp_path):
    """(arch reference, base checkpoint, data file): a base whose embedding already separates
    the two halves of the vocabulary a little, and token-id data labelled by which half holds
    most of an example's tokens."""
    (tmp_path / "tagger.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((VOCAB, WIDTH)).astype(np.float32)
    embed[1 : VOCAB // 2, 0] += 4.0
    embed[0] = 0.0
    base = {"embed.weight": torch.from_numpy(embed), "norm.weight": torch.ones(WIDTH), "norm.bias": torch.zeros(WIDTH)}
    save_file(base, str(tmp_path / "base.safetensors"))
    ids = rng.integers(1, VOCAB, size=(1000, TOKENS))
    ids[rng.random(ids.shape) < 0.2] = 0  # padding, masked by the model
    y = ((ids != 0) & (ids < VOCAB // 2)).sum(1) * 2 > (ids != 0).sum(1)
    np.savez(tmp_path / "tokens.npz", x=ids[:800], y=y[:800].astype(np.int64), x_test=ids[800:], y_test=y[800:].astype(np.int64))
    return f"{tmp_path / 'tagger.py'}:Tagger", tmp_path / "base.safetensors", tmp_path / "tokens.npz"


def test_two_identical_seeded_finetunes_write_identical_files(finetune, tmp_path, capsys):
    ref, base, data = finetune
    before = torch.get_num_threads()
    files = []
    try:
        for run in (1, 2):
            out = tmp_path / f"run{run}.sqz"
            argv = ["train", "--arch", ref, "--base", str(base), "--data", str(data), "--dim", "64", "--epochs", "2", "--patience", "0",
                    "--lr", "0.1", "--batch-size", "64", "--threads", "2", "--seed", "7", "-o", str(out)]
            assert main(argv) == 0, capsys.readouterr().err
            files.append(out.read_bytes())
    finally:
        torch.set_num_threads(before)
    f = fmt.read(tmp_path / "run1.sqz")
    assert f.base is not None  # a fine-tune against the base, as --base arch is for MiniLM
    share = float(np.load(data)["y_test"].mean())
    assert f.metrics["test_accuracy"] > max(share, 1 - share) + 0.05  # it trained: above the majority class (0.585)
    digests = [hashlib.sha256(b).hexdigest() for b in files]
    assert digests[0] == digests[1], f"two identical runs wrote different files: test accuracy {fmt.read(tmp_path / 'run1.sqz').metrics['test_accuracy']} vs {fmt.read(tmp_path / 'run2.sqz').metrics['test_accuracy']}"


def test_train_draws_dropout_from_its_seed_and_leaves_torch_rng_as_it_was(finetune):
    """The library loop alone: whatever state torch's global generator is in when ``train`` is
    called, the run is the same, and the caller's generator is left where it was."""
    from squeeze import Subspace, SubspaceConfig, arch
    from squeeze.base import load_base
    from squeeze.data import load_data
    from squeeze.fit import TrainConfig, train

    ref, base, data = finetune
    ds = load_data(str(data))
    thetas = []
    for caller_seed in (1, 2):
        model = arch.build(ref, {})
        sub = Subspace(model, SubspaceConfig(dim=64, seed=7), base=load_base(str(base), model=model))
        torch.manual_seed(caller_seed)
        state = torch.get_rng_state()
        train(sub, ds, TrainConfig(epochs=2, lr=0.1, batch_size=64, seed=3), progress=False)
        assert torch.equal(torch.get_rng_state(), state)
        thetas.append(sub.theta_d.detach().clone())
    assert not torch.equal(thetas[0], torch.zeros_like(thetas[0]))
    assert torch.equal(thetas[0], thetas[1])


REGENERATE = """
import hashlib, os, sys
import torch
threads = int(sys.argv[4])
torch.set_num_threads(threads)
import squeeze
model = squeeze.load(sys.argv[1], sys.argv[2], base=sys.argv[3])  # verifies the file's digest as it regenerates
h = hashlib.sha256()
for name, t in sorted(model.state_dict().items()):
    h.update(name.encode()); h.update(t.detach().contiguous().numpy().tobytes())
print(torch.get_num_threads(), h.hexdigest())
"""


def test_a_finetune_file_regenerates_the_same_weights_in_a_fresh_process_at_other_thread_counts(finetune, tmp_path, capsys):
    """Issue 29: the file trained on two threads regenerates, in new processes on one and on three
    threads, the same weights (every tensor, bit for bit) as the process that wrote it."""
    import os
    import subprocess
    import sys

    import squeeze

    ref, base, data = finetune
    out = tmp_path / "tune.sqz"
    before = torch.get_num_threads()
    try:
        argv = ["train", "--arch", ref, "--base", str(base), "--data", str(data), "--dim", "64", "--epochs", "1", "--patience", "0",
                "--lr", "0.1", "--batch-size", "64", "--threads", "2", "--seed", "3", "-o", str(out)]
        assert main(argv) == 0, capsys.readouterr().err
        here = hashlib.sha256()
        for name, t in sorted(squeeze.load(out, ref, base=str(base)).state_dict().items()):
            here.update(name.encode())
            here.update(t.detach().contiguous().numpy().tobytes())
    finally:
        torch.set_num_threads(before)
    for threads in (1, 3):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "SQUEEZE_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
        run = subprocess.run([sys.executable, "-c", REGENERATE, str(out), ref, str(base), str(threads)], capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        got_threads, digest = run.stdout.split()[-2:]
        assert int(got_threads) == threads
        assert digest == here.hexdigest(), f"{threads} thread(s) regenerated other weights than the writing process"
