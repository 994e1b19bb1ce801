"""How long should a trial train? The stopping rule of ``compress``, ``train`` and
``intrinsic-dim`` (:data:`squeeze.defaults.CONVERGE`) against the alternatives, across the zoo
and a user-file model, in one run.

    python benchmarks/stopping_rule.py                     # every case, 2 seeds
    python benchmarks/stopping_rule.py --cases mlp,gru --seeds 1
    python benchmarks/stopping_rule.py --cases gru --dim 2048 --teacher-lr 1e-2 --rules "patience 6, halving after 2; patience 20, no halving"

Each case distils a dense teacher into a random subspace of a fixed d, as ``compress`` does
(KL to the teacher mixed with cross-entropy, Adam at lr 0.1, batch 128), under each rule:

* ``fixed 10`` / ``fixed 40``: exactly that many epochs, one-cycle schedule (10 was the old default);
* ``patience P, halving after H``: until the validation objective has not improved for P
  epochs (cap 200), halving the learning rate after every H stale epochs;
* ``patience 20, no halving`` (the default): the rate stays after its warm-up. Halving on
  plateaus had stopped models whose loss sits on a plateau before it falls (the GRU at
  d = 2,048 stayed at chance) and left the CNNs short of their best objective. An epoch whose
  objective is above twice the best has diverged: back to the best state, fresh Adam moments,
  half the rate (``TrainConfig.recover``); ``patience 20, no halving, no recovery`` is the
  rule without that.

The other patience rules recover from divergence too (the default of ``TrainConfig.recover``).

Only validation data (carved from the training split) is read: the objective and accuracy at
the kept epoch, the epochs run and the seconds. The teacher of ``mlp`` is the README sample;
the others are trained dense in this run (Adam at ``--teacher-lr``, default 1e-3; the default
rule without recovery, so that every rule distils the same teachers as before it). Cases: ``mlp``
(squeeze.zoo:MLP on mnist5k, d = 750), ``lenet`` (LeNet on digits, d = 300), ``resnet``
(ResNet with BatchNorm on digits, d = 400), ``gru`` (a GRU defined in this file, on mnist1d,
d = 1024: a user-file model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from squeeze import Subspace, SubspaceConfig
from squeeze.compress import load_teacher
from squeeze.data import load_data
from squeeze.defaults import CONVERGE
from squeeze.fit import TrainConfig, train
from squeeze.zoo import MLP, LeNet, ResNet

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "mlp_mnist5k.safetensors"


class GRUClassifier(nn.Module):
    """A one-layer GRU over the sequence (one value per step), its last state into a linear head."""

    def __init__(self, hidden: int = 32, num_classes: int = 10):
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x.reshape(x.shape[0], -1, 1))[0][:, -1])


CASES = {
    # name: (data, build, d)
    "mlp": ("mnist5k", lambda shape: MLP(), 750),
    "lenet": ("digits", lambda shape: LeNet(input_shape=shape), 300),
    "resnet": ("digits", lambda shape: ResNet(input_shape=shape), 400),
    "gru": ("mnist1d", lambda shape: GRUClassifier(), 1024),
}
CAP = CONVERGE["epochs"]
RULES = {
    "fixed 10": dict(epochs=10, patience=None),
    "fixed 40": dict(epochs=40, patience=None),
    "patience 3, halving after 2": dict(epochs=CAP, patience=3, decay_after=2),
    "patience 6, halving after 2": dict(epochs=CAP, patience=6, decay_after=2),  # the default before this comparison
    "patience 10, halving after 2": dict(epochs=CAP, patience=10, decay_after=2),
    "patience 10, halving after 5": dict(epochs=CAP, patience=10, decay_after=5),
    "patience 20, no halving, no recovery": dict(epochs=CAP, patience=20, decay_after=None, recover=None),  # the default before recovery
    "patience 20, no halving": dict(epochs=CAP, patience=20, decay_after=None, recover=CONVERGE["recover"]),
}
DEFAULT = next(n for n, kw in RULES.items() if (kw["patience"], kw.get("decay_after"), kw.get("recover")) == (CONVERGE["patience"], CONVERGE["decay_after"], CONVERGE["recover"]))


def teacher_for(case: str, data, build, lr: float = 1e-3) -> nn.Module:
    """The README sample for ``mlp``; otherwise a dense model trained here with the default rule
    (Adam at ``lr``)."""
    if case == "mlp":
        return load_teacher(SAMPLE, build())
    torch.manual_seed(0)
    model = build()
    # recover=None: the GRU's and LeNet's dense teachers diverge once or twice, and recovering
    # would change the teachers every earlier measurement distilled.
    train(model, data, TrainConfig(epochs=CONVERGE["epochs"], patience=CONVERGE["patience"], lr=lr, recover=None), progress=False)
    return model.eval()


def setup(case: str, teacher_lr: float = 1e-3) -> tuple:
    """(data set, build, teacher, d) of a case."""
    data_name, make, d = CASES[case]
    data = load_data(data_name)
    build = lambda: make(data.input_shape)  # noqa: E731
    return data, build, teacher_for(case, data, build, teacher_lr), d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--seeds", type=int, default=2, help="repeats per rule (subspace and data-order seed 0, 1, ...)")
    ap.add_argument("--rules", default=";".join(RULES), help="semicolon-separated subset of: " + "; ".join(RULES))
    ap.add_argument("--dim", type=int, help="d for every case [default: the case's own]")
    ap.add_argument("--teacher-lr", type=float, default=1e-3, help="Adam learning rate of the dense teachers (mnist1d's GRU needs 1e-2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rules = [r.strip() for r in args.rules.split(";")]
    if any(r not in RULES for r in rules):
        ap.error(f"unknown rule in {args.rules!r}; choose from: " + "; ".join(RULES))
    torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases.split(","):
        data, build, teacher, d = setup(case, args.teacher_lr)
        d = args.dim or d
        for rule in rules:
            kw = RULES[rule]
            for seed in range(args.seeds):
                sub = Subspace(build(), SubspaceConfig(dim=d, seed=seed))
                cfg = TrainConfig(lr=0.1, seed=seed, **kw)
                start = time.process_time()
                res = train(sub, data, cfg, teacher=teacher, progress=False)
                row = dict(case=case, rule=rule, seed=seed, d=d, val_loss=res.val_loss, val_accuracy=res.val_accuracy, epochs=res.epochs_run, best_epoch=res.best_epoch, recoveries=res.recoveries, cpu_s=time.process_time() - start)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print("| case | rule | val objective | val accuracy | epochs run | recoveries | CPU s | CPU / default |")
    print("|---|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        base_cpu = statistics.mean(r["cpu_s"] for r in mine if r["rule"] == DEFAULT) if any(r["rule"] == DEFAULT for r in mine) else float("nan")
        for rule in rules:
            rs = [r for r in mine if r["rule"] == rule]
            if not rs:
                continue
            cpu = statistics.mean(r["cpu_s"] for r in rs)
            print(f"| {case} (d={rs[0]['d']}) | {rule}{' (default)' if rule == DEFAULT else ''} | {statistics.mean(r['val_loss'] for r in rs):.4f} | {statistics.mean(r['val_accuracy'] for r in rs):.4f} | {statistics.mean(r['epochs'] for r in rs):.1f} | {sum(r['recoveries'] for r in rs)} | {cpu:.1f} | {cpu / base_cpu:.2f} |")
    print(f"\nmeans over {args.seeds} seed(s); the objective is the held-out distillation loss at the kept epoch (lower is better)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
