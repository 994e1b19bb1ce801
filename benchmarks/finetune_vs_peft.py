"""squeeze against Hugging Face PEFT on the MiniLM sample's tasks, side by side.

PEFT methods: LoRA, VeRA, FourierFT, Uni-LoRA, TinyLoRA, VB-LoRA and RandLoRA. Tasks
(``--task``): VADER words, positive or negative (the sample's, samples/finetune_minilm.py
``vader_words``), and AFINN-165 word valence in 4 classes (``afinn_words``: <= -3, -2..-1, 1..2,
>= 3). Each its own seeded 80/20 split; all-MiniLM-L6-v2 with mean pooling and a linear head,
squeeze's training loop (``squeeze.fit.train``: a fixed number of epochs, one-cycle schedule,
Adam, batch 64, the best epoch by validation loss), one CPU thread.

- PEFT methods adapt query and value (PEFT's defaults otherwise) plus a free linear head; their
  seed sets torch's init of the head and adapters and the seed of their random matrices,
  spectral positions or index assignment. Bytes shipped: the adapter state dict in float16
  (safetensors) plus the head in float16. For methods that can regenerate part of their state
  from a seed (VeRA, Uni-LoRA, TinyLoRA, RandLoRA) both sizes are reported: ``bytes`` with what
  PEFT stores by default and ``seed_bytes`` with the trained tensors only (PEFT documents that
  such seed-only adapters are not guaranteed to reload identically across systems or versions).
  The test accuracy is measured on the model rebuilt from the shipped files.
- ``squeeze-<bytes>``: the one-command fine-tune, ``squeeze train --base arch --size <bytes>
  --lean`` (``squeeze.train`` with a base and a byte budget, nothing else): it chooses d, the
  encoding and the schedule itself (squeeze.defaults.FINETUNE) and runs at its default learning
  rate with no grid. Bytes shipped: its file. CPU seconds: the whole verb (sizing, training,
  choosing the encoding).
- squeeze methods with a fixed d: ``bitfit-d`` puts the head, the biases and LayerNorm gains in the subspace (the
  sample's include patterns), ``said-d`` every weight (SAID); both learn one scale per tensor
  (layerwise; the scales count in d). Bytes shipped: the .sqz file that ``squeeze.format.save``
  writes (float16 theta_d, no metrics, what ``squeeze train --lean`` writes); its test accuracy
  is measured on the subspace reloaded from the file against ``--base arch``. ``+q<L>`` rows
  quantize the kept run's theta_d to L levels (k-means, entropy coded; no extra training).

Learning rate: every method gets the same grid (``--lrs``). The grid runs on the first seed; the
rate with the best validation accuracy (validation words carved from the training split by
``Dataset.validation_split``; ties: lower validation loss) is kept, and the other seeds run at
that rate only. The test split is evaluated once per kept run, after the choice.

Every run is cached as JSON in ``--out`` (re-running skips finished runs; two processes may share
the folder with disjoint ``--methods``). Prints a markdown table and writes JSON and a plot.

    pip install -e '.[finetune,bench]'
    python benchmarks/finetune_vs_peft.py --quick                   # smoke run: tiny data, 1 epoch
    python benchmarks/finetune_vs_peft.py --methods lora-r1,bitfit-1000 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import squeeze
from squeeze import Subspace, SubspaceConfig
from squeeze import format as fmt
from squeeze import loading
from squeeze.data import Dataset
from squeeze.fit import TrainConfig, accuracy, train
from squeeze.pretrained import MiniLMClassifier

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["query", "value"]
# method -> (PEFT kind, size knob): LoRA rank; VeRA rank; FourierFT frequencies; Uni-LoRA
# theta_d_length (its default 256); TinyLoRA u (its default 64); VB-LoRA bank vectors (its
# default 256, vector length 128 = a divisor of MiniLM's 384, top-2); RandLoRA basis rank (its
# default 32 ships 120 KB of trained scales here; 384 is its smallest file).
PEFT = {"lora-r1": ("lora", 1), "lora-r4": ("lora", 4), "vera": ("vera", 256), "fourierft-100": ("fourierft", 100), "fourierft-1000": ("fourierft", 1000),
        "unilora-256": ("unilora", 256), "unilora-1000": ("unilora", 1000), "unilora-4000": ("unilora", 4000), "tinylora-64": ("tinylora", 64),
        "tinylora-256": ("tinylora", 256), "vblora-32": ("vblora", 32), "vblora-256": ("vblora", 256), "randlora-384": ("randlora", 384)}
DEFAULT_METHODS = list(PEFT) + [f"squeeze-{b}" for b in (2048, 4096, 8192, 16384)]
TASKS = {"vader": "vader_words", "afinn": "afinn_words"}
RECIPE_LR = squeeze.TrainConfig().lr  # the squeeze-<bytes> rows run their default rate alone
# Adapter tensors a seed-only save leaves out (PEFT regenerates them from the seed or the base).
REGENERABLE = {"vera_A", "vera_B", "unilora_indices_A", "unilora_indices_B", "unilora_scales_A", "unilora_scales_B",
               "tinylora_A", "tinylora_B", "tinylora_P", "randlora_A", "randlora_B"}


def arch(ds: Dataset) -> dict:
    return {"ref": "squeeze.pretrained:MiniLMClassifier", "kwargs": {"num_classes": ds.num_classes}}


def sample_module():
    """samples/finetune_minilm.py as a module (its data set and include patterns are reused, not copied)."""
    spec = importlib.util.spec_from_file_location("finetune_minilm", ROOT / "samples" / "finetune_minilm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_data(task: str, quick: bool) -> Dataset:
    """The task's split (seed 0); ``quick`` keeps 640 training and 256 test words."""
    ds = getattr(sample_module(), TASKS[task])(0)[0]
    if quick:
        ds = Dataset(ds.name, ds.x_train[:640], ds.y_train[:640], ds.x_test[:256], ds.y_test[:256], ds.num_classes, ds.preprocessing)
    return ds


def without_test(ds: Dataset) -> Dataset:
    """``ds`` whose test split is one training word: the loop's own test evaluation never sees the test words."""
    return Dataset(ds.name, ds.x_train, ds.y_train, ds.x_train[:1], ds.y_train[:1], ds.num_classes, ds.preprocessing)


# ---------------------------------------------------------------- PEFT
def peft_config(method: str, seed: int):
    """The PEFT config of ``method``, its documented defaults except the size knob and the seed."""
    import peft

    kind, size = PEFT[method]
    return {
        "lora": lambda: peft.LoraConfig(r=size, target_modules=TARGETS),
        "vera": lambda: peft.VeraConfig(r=size, target_modules=TARGETS, projection_prng_key=seed, save_projection=True),
        "fourierft": lambda: peft.FourierFTConfig(n_frequency=size, target_modules=TARGETS, random_loc_seed=seed),
        "unilora": lambda: peft.UniLoraConfig(theta_d_length=size, target_modules=TARGETS, proj_seed=seed, save_indices=True),
        "tinylora": lambda: peft.TinyLoraConfig(u=size, target_modules=TARGETS, projection_seed=seed, save_projection=True),
        "vblora": lambda: peft.VBLoRAConfig(num_vectors=size, vector_length=128, target_modules=TARGETS, save_only_topk_weights=True),
        "randlora": lambda: peft.RandLoraConfig(r=size, target_modules=TARGETS, projection_prng_key=seed, save_projection=True),
    }[kind]()


def peft_model(method: str, seed: int, classes: int) -> torch.nn.Module:
    """MiniLMClassifier whose encoder carries the PEFT adapter of ``method``; the head stays trainable."""
    import peft

    cfg = peft_config(method, seed)
    torch.manual_seed(seed)  # the head's and the adapters' init
    model = MiniLMClassifier(num_classes=classes)
    model.encoder = peft.get_peft_model(model.encoder, cfg)
    return model


def peft_files(model: torch.nn.Module, folder: Path) -> tuple[int, int, int]:
    """Write the adapter (PEFT's state dict, float16) and the head; return (bytes, seed-only bytes, trainable numbers).

    Seed-only bytes: the adapter without the tensors its method can regenerate from its seed
    or the base (``REGENERABLE``: random projections and bases, index assignments and their
    scales, TinyLoRA's SVD of the base weights), written the same way.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save, save_file

    folder.mkdir(parents=True, exist_ok=True)
    half = lambda v: v.detach().half().contiguous() if v.is_floating_point() else v.detach().contiguous()
    adapter = {k: half(v) for k, v in get_peft_model_state_dict(model.encoder).items()}
    head = {k: half(v) for k, v in model.head.state_dict().items()}
    save_file(adapter, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    save_file(head, folder / "head.safetensors", metadata={"format": "pt"})
    model.encoder.peft_config["default"].save_pretrained(str(folder))
    seed_only = {k: v for k, v in adapter.items() if k.rsplit(".", 1)[-1] not in REGENERABLE}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum((folder / f).stat().st_size for f in ("adapter_model.safetensors", "head.safetensors"))
    return size, len(save(seed_only, metadata={"format": "pt"})) + (folder / "head.safetensors").stat().st_size, trainable


def peft_reload(method: str, seed: int, classes: int, folder: Path) -> torch.nn.Module:
    """The PEFT model rebuilt from its shipped files (float16 adapter and head)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model = peft_model(method, seed, classes)
    set_peft_model_state_dict(model.encoder, {k: v.float() for k, v in load_file(folder / "adapter_model.safetensors").items()})
    model.head.load_state_dict({k: v.float() for k, v in load_file(folder / "head.safetensors").items()})
    return model.eval()


# ---------------------------------------------------------------- squeeze
def squeeze_config(method: str, seed: int) -> SubspaceConfig:
    """``bitfit-<d>``: the sample's include patterns; ``said-<d>``: every weight. Layerwise either way."""
    kind, d = method.split("-")
    include = tuple(sample_module().INCLUDE) if kind == "bitfit" else ()
    return SubspaceConfig(dim=int(d), projection="sorf", seed=seed, layerwise=True, include=include)


def squeeze_model(method: str, seed: int, classes: int) -> Subspace:
    model = MiniLMClassifier(num_classes=classes)
    return Subspace(model, squeeze_config(method, seed), base=model.base_state_dict())


def recipe_run(method: str, seed: int, ds: Dataset, folder: Path) -> dict:
    """``squeeze-<bytes>``: the one-command fine-tune, ``squeeze.train`` with a base and a byte
    budget and nothing else (``squeeze train --base arch --size <bytes> --lean``): d, the encoding
    and the schedule are its own choices; its learning rate is its default (no grid)."""
    from squeeze.training import TrainConfig as Recipe, train as train_verb

    budget = int(method.split("-")[1])
    cpu, wall = time.process_time(), time.time()
    done = train_verb(arch(ds)["ref"], without_test(ds), Recipe(size=budget, seed=seed), arch_kwargs=arch(ds)["kwargs"], base="arch", progress=False, lean=True)
    cpu_s = time.process_time() - cpu
    folder.mkdir(parents=True, exist_ok=True)
    size = done.save(folder / "model.sqz").size_bytes
    return {"method": method, "lr": done.config.lr, "seed": seed, "val_accuracy": done.metrics["val_accuracy"], "val_loss": done.fit.val_loss, "best_epoch": done.fit.best_epoch,
            "cpu_seconds": cpu_s, "wall_seconds": time.time() - wall, "bytes": size, "seed_bytes": size, "trainable": done.sub.d,
            "levels": done.metrics.get("levels"), "encodings": {str(k): v for k, v in done.encodings.items()}}


# ---------------------------------------------------------------- runs
def run_one(method: str, lr: float, seed: int, ds: Dataset, args, folder: Path) -> dict:
    """Train one (method, lr, seed); write what it ships to ``folder``; no test words seen."""
    if method.startswith("squeeze-"):
        return recipe_run(method, seed, ds, folder)
    torch.manual_seed(seed)  # dropout
    cpu, wall = time.process_time(), time.time()
    model = peft_model(method, seed, ds.num_classes) if method in PEFT else squeeze_model(method, seed, ds.num_classes)
    res = train(model, without_test(ds), TrainConfig(epochs=args.epochs, lr=lr, batch_size=args.batch_size, seed=seed), progress=False)
    cpu_s = time.process_time() - cpu
    if method in PEFT:
        size, seed_size, trainable = peft_files(model, folder)
    else:
        fmt.round_for_storage_(model, "float16")
        folder.mkdir(parents=True, exist_ok=True)
        size, trainable = fmt.save(model, folder / "model.sqz", arch=arch(ds), dtype="float16").size_bytes, model.d
        seed_size = size
    return {"method": method, "lr": lr, "seed": seed, "val_accuracy": res.val_accuracy, "val_loss": res.val_loss, "best_epoch": res.best_epoch,
            "cpu_seconds": cpu_s, "wall_seconds": time.time() - wall, "bytes": size, "seed_bytes": seed_size, "trainable": trainable}


def test_accuracy(run: dict, ds: Dataset, folder: Path) -> float:
    """The kept run's test accuracy, on the model rebuilt from the files it ships."""
    if run["method"] in PEFT:
        model = peft_reload(run["method"], run["seed"], ds.num_classes, folder)
    else:
        model = loading.load_subspace(folder / "model.sqz", base="arch")
    return accuracy(model, ds.x_test, ds.y_test)


def quantized(run: dict, levels: int, ds: Dataset, folder: Path) -> dict:
    """A squeeze run's theta_d quantized to ``levels`` (k-means, no training), saved entropy-coded, tested from the file."""
    from squeeze import coding_registry
    from squeeze.quantize import QuantizeConfig, quantize_subspace

    sub = loading.load_subspace(folder / "model.sqz", base="arch")
    q = quantize_subspace(sub, QuantizeConfig(levels=levels, steps=0, seed=run["seed"]), without_test(ds))
    path = folder / f"model_q{levels}.sqz"
    size = fmt.save(sub, path, arch=arch(ds), encoded=coding_registry.encode_quantized(q.codebook, q.codes)).size_bytes
    acc = accuracy(loading.load_subspace(path, base="arch"), ds.x_test, ds.y_test)
    return {**run, "method": f"{run['method']}+q{levels}", "bytes": size, "seed_bytes": size, "val_accuracy": q.val_accuracy["kmeans"], "test_accuracy": acc}


class Cache:
    """One JSON per run under ``root``; a cached run made with other settings is refused."""

    def __init__(self, root: Path, settings: dict):
        self.root, self.settings = root, settings

    def folder(self, method: str, lr: float, seed: int) -> Path:
        return self.root / "runs" / f"{method}_lr{lr:g}_s{seed}"

    def get(self, method: str, lr: float, seed: int) -> dict | None:
        path = self.folder(method, lr, seed) / "run.json"
        if not path.exists():
            return None
        run = json.loads(path.read_text())
        if run["settings"] != self.settings:
            sys.exit(f"{path} was made with {run['settings']}, not {self.settings}; pass another --out")
        return run

    def put(self, run: dict) -> dict:
        run["settings"] = self.settings
        (self.folder(run["method"], run["lr"], run["seed"]) / "run.json").write_text(json.dumps(run, indent=1))
        return run


def method_runs(method: str, ds: Dataset, args, cache: Cache) -> list[dict]:
    """The LR grid on the first seed, the kept rate on the others; each kept run tested once."""
    def get_or_run(lr: float, seed: int) -> dict | None:
        run = cache.get(method, lr, seed)
        if run is None and args.cached_only:
            return None
        if run is None:
            run = cache.put(run_one(method, lr, seed, ds, args, cache.folder(method, lr, seed)))
            print(f"  {method} lr {lr:g} seed {seed}: val {run['val_accuracy']:.4f} (loss {run['val_loss']:.4f}), {run['bytes']:,} bytes, "
                  f"{run['cpu_seconds']:.0f} s CPU", flush=True)
        return run

    recipe = method.startswith("squeeze-")
    grid = [get_or_run(lr, args.seeds[0]) for lr in ([RECIPE_LR] if recipe else args.lrs)]
    if None in grid:  # --cached-only and the grid is unfinished: no rate can be chosen yet
        print(f"  {method}: skipped, the learning-rate grid on seed {args.seeds[0]} is not finished")
        return []
    best = max(grid, key=lambda r: (r["val_accuracy"], -r["val_loss"], -r["lr"]))
    kept = [best] + [r for r in (get_or_run(best["lr"], s) for s in args.seeds[1:]) if r is not None]
    for run in kept:
        if "test_accuracy" not in run:
            run["test_accuracy"] = test_accuracy(run, ds, cache.folder(method, run["lr"], run["seed"]))
            cache.put(run)
    out = [{**r, "grid": False} for r in grid if r is not best] + [{**r, "kept": True} for r in kept]
    if method not in PEFT and not recipe:
        for levels in args.levels:
            for run in kept:
                key = f"q{levels}"
                if key not in run:
                    run[key] = quantized(run, levels, ds, cache.folder(method, run["lr"], run["seed"]))
                    cache.put(run)
                out.append({**run[key], "kept": True})
    return out


def summarize(runs: list[dict]) -> list[dict]:
    """One row per method over its kept runs: bytes, trainable numbers, mean and spread of test accuracy, CPU time."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        kept = [r for r in runs if r["method"] == method and r.get("kept")]
        grid = [r for r in runs if r["method"] == method]
        accs = [r["test_accuracy"] for r in kept]
        rows.append({
            "method": method, "lr": kept[0]["lr"], "trainable": kept[0]["trainable"], "bytes": max(r["bytes"] for r in kept),
            "seed_bytes": max(r.get("seed_bytes", r["bytes"]) for r in kept),
            "seeds": [r["seed"] for r in kept], "test_accuracy": accs, "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "min": min(accs), "max": max(accs),
            "cpu_seconds_per_run": statistics.fmean(r["cpu_seconds"] for r in kept),
            "cpu_seconds_all_runs": sum(r["cpu_seconds"] for r in grid if "+q" not in method),
            "val_by_lr": {f"{r['lr']:g}": round(r["val_accuracy"], 4) for r in sorted(grid, key=lambda r: r["lr"]) if r["seed"] == kept[0]["seed"]},
        })
    return sorted(rows, key=lambda r: r["bytes"])


def table(rows: list[dict]) -> str:
    lines = ["| method | trainable numbers | bytes shipped | seed-only bytes | lr (val acc per lr, first seed) | test acc mean ± std (min–max) | test acc per seed | CPU s per run |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        grid = ", ".join(f"{k}: {v:.4f}" for k, v in r["val_by_lr"].items())
        lines.append(f"| {r['method']} | {r['trainable']:,} | {r['bytes']:,} | {r['seed_bytes']:,} | {r['lr']:g} ({grid}) | {r['mean']:.4f} ± {r['std']:.4f} ({r['min']:.4f}–{r['max']:.4f}) "
                     f"| {', '.join(f'{a:.4f}' for a in r['test_accuracy'])} (seeds {', '.join(map(str, r['seeds']))}) | {r['cpu_seconds_per_run']:.0f} |")
    return "\n".join(lines)


def cpu_ratios(rows: list[dict], baseline: str = "lora-r1") -> str:
    """Each method's mean CPU seconds per run over the baseline's, measured in this run (the
    issue's bar: the one-command fine-tune within 2x of LoRA r=1); empty without the baseline."""
    base = next((r for r in rows if r["method"] == baseline), None)
    if base is None:
        return ""
    return "".join(f"CPU per run against {baseline}: {r['method']} {r['cpu_seconds_per_run']:.0f} s / {base['cpu_seconds_per_run']:.0f} s = "
                   f"{r['cpu_seconds_per_run'] / base['cpu_seconds_per_run']:.2f}x\n" for r in rows if r is not base)


def budgets(rows: list[dict], key: str = "bytes") -> str:
    """At each row's byte count (``key``: bytes or seed_bytes): the best mean test accuracy of squeeze and of PEFT among rows shipping no more."""
    lines = [f"| budget ({key.replace('_', '-')}) | best squeeze at or under it | best PEFT at or under it | squeeze - PEFT |", "|---|---|---|---|"]
    for b in sorted({r[key] for r in rows}):
        best = {}
        for side in ("squeeze", "peft"):
            fits = [r for r in rows if r[key] <= b and (r["method"] in PEFT) == (side == "peft")]
            best[side] = max(fits, key=lambda r: r["mean"]) if fits else None
        sq, pe = best["squeeze"], best["peft"]
        cell = lambda r: f"{r['method']} {r['mean']:.4f}" if r else "none"
        gap = f"{sq['mean'] - pe['mean']:+.4f}" if sq and pe else "-"
        lines.append(f"| {b:,} | {cell(sq)} | {cell(pe)} | {gap} |")
    return "\n".join(lines)


def family(method: str) -> str:
    """The plot line a method belongs to."""
    if method.startswith("squeeze-"):
        return "squeeze train --base --size (the one-command fine-tune)"
    if method.startswith(("bitfit", "said")):
        kind, rest = method.split("-", 1)
        return f"squeeze {'BitFit tensors' if kind == 'bitfit' else 'SAID, all weights'}" + (" (k-means " + rest.split("+q")[1] + " levels)" if "+q" in rest else "")
    return {"lora": "LoRA", "vera": "VeRA", "fourierft": "FourierFT", "unilora": "Uni-LoRA (as saved: with its indices)",
            "tinylora": "TinyLoRA (as saved: with its SVD factors)", "vblora": "VB-LoRA", "randlora": "RandLoRA"}[method.split("-")[0]]


def plot(rows: list[dict], path: Path, title: str) -> None:
    from squeeze.plot import log_x_figure

    with log_x_figure(path, xlabel="bytes shipped (log scale)", ylabel="test accuracy (mean of seeds, bars: min-max)", title=title) as ax:
        for fam in dict.fromkeys(family(r["method"]) for r in rows):
            pts = sorted((r for r in rows if family(r["method"]) == fam), key=lambda r: r["bytes"])
            x, y = [r["bytes"] for r in pts], [r["mean"] for r in pts]
            err = [[r["mean"] - r["min"] for r in pts], [r["max"] - r["mean"] for r in pts]]
            style = "-o" if fam.startswith("squeeze") else "--s"
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=2, markersize=4, label=fam)
        lo, hi = min(r["min"] for r in rows), max(r["max"] for r in rows)
        ax.set_ylim(lo - 0.8 * (hi - lo), hi + 0.05 * (hi - lo))  # room for the legend below the lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="vader", help="vader: word polarity, 2 classes; afinn: word valence, 4 classes")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated; PEFT: {', '.join(PEFT)}; squeeze: squeeze-<bytes> (the one-command fine-tune), bitfit-<d>, said-<d>")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds; the learning rate is chosen on the first")
    ap.add_argument("--lrs", default="0.002,0.01,0.05,0.1,0.2", help="the learning-rate grid every method gets")
    ap.add_argument("--levels", default="16", help="k-means levels for quantized squeeze rows (comma-separated; empty: none)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cached-only", action="store_true", help="train nothing: report the runs already in --out (a method's seeds: those finished)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 640 training words, 1 epoch, separate cache")
    ap.add_argument("--out", type=Path, default=None, help="cache, JSON and plot folder [default: out/finetune_vs_peft, or ..._quick]")
    ap.add_argument("--plot", type=Path, default=None, help="the PNG [default: <out>/finetune_vs_peft.png]")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.lrs = [float(x) for x in args.lrs.split(",")]
    args.levels = [int(x) for x in args.levels.split(",") if x]
    if args.quick:
        args.epochs = 1
    bad = [m for m in args.methods if m not in PEFT and not (m.split("-")[0] in ("bitfit", "said", "squeeze") and m.split("-")[-1].isdigit())]
    if bad:
        sys.exit(f"unknown methods {bad}; use {', '.join(PEFT)}, squeeze-<bytes>, bitfit-<d> or said-<d>")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="peft|transformers")  # offline look-ups of the hub config; VeRA's regenerated projections
    out = args.out or ROOT / "out" / (f"finetune_vs_peft_{args.task}" + ("_quick" if args.quick else ""))
    settings = {"task": args.task, "epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads, "quick": args.quick, "torch": torch.__version__}
    cache = Cache(out, settings)
    ds = build_data(args.task, args.quick)
    import peft

    print(f"{ds.name} ({ds.num_classes} classes): {len(ds.y_train)} train ({int(len(ds.y_train) * 0.1)} of them validation), {len(ds.y_test)} test; "
          f"peft {peft.__version__}, torch {torch.__version__}, {args.threads} thread(s); lr grid {args.lrs} on seed {args.seeds[0]}", flush=True)
    runs = []
    for method in args.methods:
        runs += method_runs(method, ds, args, cache)
    if not runs:
        sys.exit("no finished runs to report")
    rows = summarize(runs)
    text = table(rows)
    print(text)
    print()
    print(cpu_ratios(rows))
    print(budgets(rows))
    print()
    print(budgets(rows, "seed_bytes"))
    report = {"settings": settings, "peft": peft.__version__, "lrs": args.lrs, "seeds": args.seeds, "rows": rows, "runs": runs}
    (out / "finetune_vs_peft.json").write_text(json.dumps(report, indent=1))
    png = args.plot or out / "finetune_vs_peft.png"
    plot(rows, png, f"{ds.name}, all-MiniLM-L6-v2, {args.epochs} epochs")
    print(f"wrote {out / 'finetune_vs_peft.json'} and {png}")
    return report


if __name__ == "__main__":
    main()
