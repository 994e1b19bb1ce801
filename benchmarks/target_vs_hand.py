"""``compress --target 0.95`` against a converged hand search, on models it was not tuned on.

    python benchmarks/target_vs_hand.py                    # resnet (digits) and gru (mnist1d)
    python benchmarks/target_vs_hand.py --cases gru --dims 256,512,1024,2048

For each case (the teachers and architectures of ``benchmarks/stopping_rule.py``: a ResNet
with BatchNorm on digits, a user-file GRU on mnist1d; the teacher trained dense here):

* the search: :func:`squeeze.compress.compress` with ``target=0.95`` (every choice on
  validation data carved from the training split);
* the hand search: every d of ``--dims`` pinned, each trained to convergence and stored in
  every encoding (float16, 4, 8 and 16 levels), and the smallest of those files whose **test**
  accuracy reaches 0.95 of the teacher's. Reading the test split is what makes it a reference
  and not a method: it is the best a user could have picked knowing the answer.

File bytes are measured the same way for both (``squeeze.save`` without metrics or
architecture). Prints, per case: the search's kept file (bytes, test share of the teacher) and
the hand search's, and their ratio.

Measured (one thread; ``--cases resnet`` and ``--cases gru --teacher-lr 1e-2``), with the
divergence recovery of :data:`squeeze.defaults.CONVERGE` and the search's step to the largest d
below the best file:

| case | search: file | test / teacher | hand search: smallest passing | test / teacher |
|---|---|---|---|---|
| ResNet+BN, digits | 2,224 B (d = 768, 8 levels) | 0.963 | 2,224 B (the same file) | 0.963 |
| GRU, mnist1d | 1,160 B (d = 1,347, 8 levels) | 0.953 | 1,224 B (d = 1,536, 8 levels) | 0.975 |

Before the recovery the GRU's search kept 1,736 B (d = 2,048, 16 levels) at 0.892 and no hand
file passed; with the recovery but not the search step, 1,236 B (d = 1,024, 16 levels) at 0.964.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from squeeze.compress import CompressConfig, compress
from squeeze.fit import accuracy
from stopping_rule import setup

TARGET = 0.95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="resnet,gru")
    ap.add_argument("--dims", default="64,128,192,256,384,512,768,1024,1536,2048,3072", help="the hand search's grid of d")
    ap.add_argument("--teacher-lr", type=float, default=1e-3, help="Adam learning rate of the dense teachers (mnist1d's GRU needs 1e-2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = []
    for case in args.cases.split(","):
        data, build, teacher, _ = setup(case, args.teacher_lr)
        teacher_test = accuracy(teacher, data.x_test, data.y_test)
        start = time.process_time()
        found = compress(teacher, build, data, CompressConfig(target=TARGET), progress=False)
        search_cpu = time.process_time() - start
        k = found.kept
        print(json.dumps({"case": case, "search": k.as_dict(), "teacher_test": teacher_test, "cpu_s": round(search_cpu, 1)}), flush=True)
        hand = []
        for d in (int(x) for x in args.dims.split(",")):
            if d > found.D:
                continue
            r = compress(teacher, build, data, CompressConfig(dim=d, target=TARGET), progress=False)
            hand += r.candidates
            for c in r.candidates:
                print(json.dumps({"case": case, "hand": c.as_dict()}), flush=True)
        passing = [c for c in hand if c.test_accuracy >= TARGET * teacher_test]
        best = min(passing, key=lambda c: c.bytes) if passing else None
        row = {
            "case": case, "D": found.D, "teacher_test": teacher_test,
            "search_bytes": k.bytes, "search_d": k.d, "search_encoding": k.encoding, "search_test_share": k.test_accuracy / teacher_test,
            "hand_bytes": best.bytes if best else None, "hand_d": best.d if best else None, "hand_encoding": best.encoding if best else None,
            "hand_test_share": best.test_accuracy / teacher_test if best else None, "hand_tried": len(hand),
        }
        out.append(row)
    print()
    print("| case | D | search: file | test / teacher | hand search: smallest passing file | test / teacher | search / hand bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in out:
        hand = f"{r['hand_bytes']:,} B (d={r['hand_d']:,} {r['hand_encoding']})" if r["hand_bytes"] else "none passed"
        share = f"{r['hand_test_share']:.3f}" if r["hand_bytes"] else "-"
        ratio = f"{r['search_bytes'] / r['hand_bytes']:.2f}" if r["hand_bytes"] else "-"
        print(f"| {r['case']} | {r['D']:,} | {r['search_bytes']:,} B (d={r['search_d']:,} {r['search_encoding']}) | {r['search_test_share']:.3f} | {hand} | {share} | {ratio} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
