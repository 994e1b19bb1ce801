"""``squeeze compress``: dense checkpoint -> the smallest (or most accurate) .sqz file on the
(d, encoding) plane, chosen on validation only; outputs checked first; strict loading."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from squeeze import arch as arch_mod
from squeeze import format as fmt
from squeeze import loading
from squeeze.compress import CompressConfig, compress, load_teacher
from squeeze.data import Dataset, load_data
from squeeze.fit import TrainConfig, accuracy, predict, train
from squeeze.frontier import Search, default_measure, search_target
from squeeze.holdout import carve
from squeeze.search import Candidate, choose
from squeeze.zoo import MLP
from squeeze_cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: one thread is fastest on a busy machine
MLP_KW = '{"hidden": [32]}'
FAST = ["--epochs", "30", "--patience", "3", "--qat-steps", "30"]  # short fits: these tests check behaviour, not quality


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """A dense MLP trained on digits in the test, saved as a .pt state_dict."""
    torch.manual_seed(0)
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))
    train(model, digits, TrainConfig(epochs=20, lr=3e-3), progress=False)
    path = tmp_path_factory.mktemp("teacher") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path, model, accuracy(model, digits.x_test, digits.y_test)


def _json(out: str) -> dict:
    return json.loads(out[out.index("{") :])


def _args(path, *extra):
    return ["compress", str(path), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", *FAST, *extra]


def test_compress_round_trip(teacher, digits, tmp_path, capsys):
    path, model, teacher_acc = teacher
    assert teacher_acc > 0.85
    out = tmp_path / "mlp.sqz"
    rc = main(_args(path, "--dim", "256", "--levels", "8", "-o", str(out), "--json"))
    report = _json(capsys.readouterr().out)
    assert rc == 0
    f = fmt.read(out)
    assert f.d == report["d"] == 256 and f.D == report["D"] == sum(p.numel() for p in model.parameters())
    assert report["encoding"] == "q8" and f.encoding["levels"] == 8
    assert report["sqz_bytes"] == out.stat().st_size
    # one ratio everywhere: float32 bytes of the weights / file bytes, as `info` reports it
    assert report["ratio"] == pytest.approx(f.dense_bytes() / f.size_bytes, abs=0.05)
    assert report["teacher_accuracy"] == pytest.approx(teacher_acc, abs=1e-6)
    # the file records the metrics, and they are the metrics of the weights it regenerates
    assert f.metrics["test_accuracy"] == pytest.approx(report["accuracy"], abs=5e-5)  # recorded to 4 digits
    assert f.metrics["dense_test_accuracy"] == pytest.approx(teacher_acc, abs=5e-5)
    assert f.metrics["search"] == {"candidates": 1} and "seconds" not in json.dumps(f.metrics)
    loaded = loading.load(out)
    assert accuracy(loaded, digits.x_test, digits.y_test) == pytest.approx(report["accuracy"], abs=1e-6)
    agreement = float((loaded(digits.x_test).argmax(1) == model.eval()(digits.x_test).argmax(1)).float().mean())
    assert agreement == pytest.approx(report["agreement"], abs=1e-6)
    assert report["accuracy"] >= 0.85 * teacher_acc  # d=256 of D=2,410 keeps most of the quality
    [trial] = report["trials"]
    assert trial["epochs"] >= 1 and report["refitted"]  # the file is the trial's (d, encoding) trained again on all training data


def test_size_budget_keeps_the_file_with_the_best_validation_objective_within_it(teacher, digits, tmp_path, capsys):
    path, _, _ = teacher
    out = tmp_path / "budget.sqz"
    rc = main(_args(path, "--size", "1.2KB", "--plot", str(tmp_path / "frontier.png"), "-o", str(out), "--json"))
    report = _json(capsys.readouterr().out)
    assert rc == 0 and report["size"] == 1200
    assert out.stat().st_size <= 1200 and report["sqz_bytes"] == out.stat().st_size
    fitting = [t for t in report["trials"] if t["bytes"] <= 1200]
    kept = next(t for t in report["trials"] if (t["d"], t["encoding"]) == (report["d"], report["encoding"]))
    assert min(t["val_loss"] for t in fitting) == kept["val_loss"] and kept["val_accuracy"] == report["val_accuracy"]
    assert report["confirm_interval"] is None and report["val_share"][1] < report["val_share"][0] < report["val_share"][2]
    assert len({t["encoding"] for t in report["trials"]}) >= 3  # float16 and several levels were tried
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fmt.read(out).metrics["search"]["candidates"] == len(report["trials"])


USER_ARCH = textwrap.dedent(
    """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10))

        def forward(self, x):
            return self.body(x)
    """
)


def test_target_keeps_the_smallest_passing_file_user_architecture(digits, tmp_path, capsys):
    arch_file = tmp_path / "my_net.py"
    arch_file.write_text(USER_ARCH)
    ref = f"{arch_file}:Net"
    torch.manual_seed(1)
    dense = arch_mod.build(ref)
    train(dense, digits, TrainConfig(epochs=20, lr=3e-3), progress=False)
    ckpt = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(ckpt))
    rc = main(["compress", str(ckpt), "--arch", ref, "--data", "digits", "--target", "0.9", *FAST, "--json"])
    report = _json(capsys.readouterr().out)
    out = tmp_path / "net.sqz"  # the default output: beside the input
    assert rc == 0 and report["reached"] and report["output"] == str(out) and out.exists()
    threshold = report["threshold"]
    assert threshold == pytest.approx(0.9 * report["teacher_val_accuracy"], abs=1e-6)
    assert all(t["val_se"] > 0 for t in report["trials"])
    passing = [t for t in report["trials"] if t["val_accuracy"] - t["val_se"] >= threshold]  # by one standard error
    kept = next(t for t in report["trials"] if (t["d"], t["encoding"]) == (report["d"], report["encoding"]))
    assert kept in passing and report["confirmed"] and kept["confirm_share"][1] >= 0.9
    # the confirmation share looked at the passing candidates from the smallest up: every smaller one was refused there
    smaller = [t for t in passing if t["bytes"] < kept["bytes"]]
    assert all(t["confirm_share"][1] < 0.9 for t in smaller)
    assert report["confirm_interval"] == kept["confirm_share"][1:] and report["confirm_examples"] == report["val_examples"] > 100
    assert len({(t["d"], t["encoding"]) for t in report["trials"]}) == len(report["trials"]) >= 4
    # an independent evaluation of the decompressed weights gives the reported accuracy
    weights = tmp_path / "net_dense.safetensors"
    assert main(["decompress", str(out), "--arch", ref, "-o", str(weights)]) == 0
    from safetensors.torch import load_file

    fresh = arch_mod.build(ref)
    fresh.load_state_dict(load_file(str(weights)), strict=True)
    assert accuracy(fresh, digits.x_test, digits.y_test) == pytest.approx(report["accuracy"], abs=1e-6)


def test_the_choice_never_reads_the_test_split(teacher, digits):
    """Shuffled test labels (and test inputs) change every test accuracy but no choice."""
    _, model, _ = teacher
    gen = torch.Generator().manual_seed(7)
    perm = torch.randperm(len(digits.y_test), generator=gen)
    shuffled = Dataset(digits.name, digits.x_train, digits.y_train, digits.x_test.flip(0), digits.y_test[perm], digits.num_classes, digits.preprocessing)
    config = CompressConfig(target=0.95, epochs=20, patience=3, qat_steps=20, start_dim=64, max_fits=4)
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    runs = [compress(model, build, d, config, progress=False) for d in (digits, shuffled)]
    strip = lambda r: [{k: v for k, v in c.as_dict().items() if k not in ("test_accuracy", "seconds", "wall_seconds")} for c in r.candidates]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1]) and len(runs[0].candidates) >= 4
    assert (runs[0].kept.d, runs[0].kept.encoding) == (runs[1].kept.d, runs[1].kept.encoding)
    assert torch.equal(runs[0].sub.theta_d, runs[1].sub.theta_d)
    assert runs[0].accuracy != runs[1].accuracy  # the test split did change


def test_two_identical_runs_give_identical_files(teacher, tmp_path):
    path, _, _ = teacher
    outs = [tmp_path / "a.sqz", tmp_path / "b.sqz"]
    for out in outs:
        assert main(_args(path, "--dim", "128", "-o", str(out))) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_outputs_are_checked_before_any_work(teacher, tmp_path, capsys):
    path, _, _ = teacher
    existing = tmp_path / "keep.sqz"
    existing.write_bytes(b"a good file")
    cases = [
        (["-o", str(existing)], "--force"),
        (["-o", str(path)], "must end in .sqz"),
        (["-o", str(tmp_path / "out.onnx")], "must end in .sqz"),
        (["-o", str(tmp_path / "no" / "x.sqz")], "does not exist"),
    ]
    folder = tmp_path / "folder.sqz"
    folder.mkdir()
    cases.append((["-o", str(folder)], "is a folder"))
    for extra, words in cases:
        assert main(_args(path, "--dim", "8", *extra)) == 2
        assert words in capsys.readouterr().err
    assert existing.read_bytes() == b"a good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.sqz", "keep.sqz"]
    assert main(_args(path, "--dim", "8", "--levels", "4", "-o", str(existing), "--force")) == 0  # a missed target at a pinned d is a note
    assert fmt.read(existing).d == 8


@pytest.mark.parametrize(
    "drop, words",
    [
        (["--arch"], "error: --arch (the architecture, e.g. 'squeeze.zoo:MLP' or 'path/to/model.py:Net') is required"),
        (["--data"], "error: --data (e.g. 'mnist5k', or a .npz/.pt/.csv file with x, y[, x_test, y_test]) is required"),
        (["--arch", "--data"], "error: --arch (the architecture, e.g. 'squeeze.zoo:MLP' or 'path/to/model.py:Net') and --data (e.g. 'mnist5k', or a .npz/.pt/.csv file with x, y[, x_test, y_test]) are required"),  # issue 27: all at once
    ],
)
def test_missing_arch_or_data_is_one_sentence_with_an_example(teacher, tmp_path, capsys, drop, words):
    path, _, _ = teacher
    args = ["compress", str(path), "--arch", "squeeze.zoo:MLP", "--data", "digits", "-o", str(tmp_path / "x.sqz")]
    for flag in drop:
        i = args.index(flag)
        del args[i : i + 2]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "x.sqz").exists()


def test_target_missed_keeps_best_file_and_fails(teacher, tmp_path, capsys):
    path, _, _ = teacher
    out = tmp_path / "tiny.sqz"
    rc = main(_args(path, "--max-dim", "4", "--target", "1.0", "--levels", "4", "-o", str(out)))
    captured = capsys.readouterr()
    assert rc == 4
    assert "goal not reached" in captured.err
    assert fmt.read(out).d <= 4  # the best file found is still written


def test_mismatched_checkpoint_lists_keys(teacher, tmp_path, capsys):
    _, model, _ = teacher
    state = dict(model.state_dict())
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    out = tmp_path / "bad.sqz"
    rc = main(["compress", str(bad), "--arch", "squeeze.zoo:MLP", "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "8", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing: head.bias" in err and "unexpected: extra.weight" in err
    assert not out.exists()


def test_pickled_module_needs_trust_pickle_and_supplies_its_class(teacher, tmp_path, capsys):
    _, model, _ = teacher
    pickled = tmp_path / "whole.pt"
    torch.save(model, pickled)
    out = tmp_path / "p.sqz"
    args = ["compress", str(pickled), "--arch-kwargs", MLP_KW, "--data", "digits", "--dim", "16", "--levels", "4", *FAST, "-o", str(out)]
    assert main(args + ["--arch", "squeeze.zoo:MLP"]) == 2
    err = capsys.readouterr().err
    assert "pickle" in err and "--trust-pickle" in err
    assert not out.exists()
    assert main(args + ["--trust-pickle"]) == 0  # no --arch: the pickled module's class is the architecture
    f = fmt.read(out)
    assert f.d == 16 and f.arch["ref"] == "squeeze.zoo:MLP"


def test_bad_dim_levels_and_size_values(teacher, tmp_path, capsys):
    path, _, _ = teacher
    for extra, words in ((["--dim", "many"], "--dim must be a positive integer or 'auto'"), (["--levels", "1"], "--levels must be an integer of at least 2"), (["--size", "2 parsecs"], "--size must be a number of bytes")):
        assert main(["compress", str(path), "--arch", "squeeze.zoo:MLP", "--data", "digits", *extra, "-o", str(tmp_path / "x.sqz")]) == 2
        assert words in capsys.readouterr().err


def _cand(d: int, enc: str, size: int, val: float, test: float = 0.0) -> Candidate:
    return Candidate(d=d, encoding=enc, bytes=size, payload_bytes=size - 500, val_accuracy=val, val_agreement=val, epochs=1, seconds=0.0, test_accuracy=test)


def test_choose_smallest_passing_or_most_accurate_within_budget():
    cands = [_cand(256, "f16", 1012, 0.90, 0.1), _cand(1024, "q4", 780, 0.91, 0.99), _cand(512, "q8", 760, 0.88), _cand(2048, "q4", 1100, 0.95)]
    best, ok = choose(cands, threshold=0.9)
    assert ok and (best.d, best.encoding) == (1024, "q4")  # the smallest passing file, not the smallest d
    best, ok = choose(cands, budget=1050)
    assert ok and (best.d, best.encoding) == (1024, "q4")
    best, ok = choose(cands, threshold=0.99)
    assert not ok and best.d == 2048  # missed: the most accurate
    best, ok = choose(cands, budget=100)
    assert not ok and best.bytes == 760  # nothing fits: the smallest
    for c, loss in zip(cands, (0.30, 0.35, 0.20, 0.10)):
        c.val_loss = loss
    assert choose(cands, budget=1050)[0].bytes == 760  # within a budget the validation objective ranks, not accuracy
    swapped = [_cand(c.d, c.encoding, c.bytes, c.val_accuracy, 1 - c.test_accuracy) for c in cands]
    assert choose(swapped, threshold=0.9)[0].d == 1024  # test accuracies play no part


def test_choose_with_a_margin_asks_each_candidate_to_clear_its_own_standard_error():
    sure = Candidate(d=512, encoding="q8", bytes=900, payload_bytes=400, val_accuracy=0.91, val_agreement=0.99, epochs=1, seconds=0.0, val_se=0.004)
    shaky = Candidate(d=256, encoding="q8", bytes=700, payload_bytes=200, val_accuracy=0.91, val_agreement=0.80, epochs=1, seconds=0.0, val_se=0.02)
    assert choose([sure, shaky], threshold=0.9)[0] is shaky  # no margin: the smaller file
    best, ok = choose([sure, shaky], threshold=0.9, margin=1.0)
    assert ok and best is sure  # 0.91 - 0.02 < 0.9 <= 0.91 - 0.004
    assert not choose([shaky], threshold=0.9, margin=1.0)[1]


def test_paired_standard_error_is_that_of_the_per_example_difference(teacher, digits):
    """A candidate's val_se is the standard error of mean(right - target x teacher right) over
    the validation examples, recomputed here from the model the candidate stores."""
    path, model, _ = teacher
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    res = compress(load_teacher(path, build()), build, digits, CompressConfig(dim=64, levels=8, target=0.9, epochs=2, patience=None, qat_steps=5, refit=False), progress=False)
    c = res.kept
    search, fraction, _ = carve(digits, "confirm")
    val = search.validation_split(fraction)[1]
    right = (predict(res.sub, val.x_train).argmax(1) == val.y_train).double()
    teacher_right = (predict(model, val.x_train).argmax(1) == val.y_train).double()
    x = right - 0.9 * teacher_right
    assert c.val_accuracy == pytest.approx(float(right.mean()))
    assert c.val_se == pytest.approx(float(x.std() / len(x) ** 0.5), rel=1e-6) and c.val_se > 0


def test_load_teacher_is_strict(teacher, digits):
    path, model, _ = teacher
    loaded = load_teacher(path, MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,)))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_batchnorm_statistics_of_the_kept_candidate_are_the_files(digits, tmp_path, capsys):
    """A CNN with BatchNorm: several candidates share a trained d; the file holds the kept one's
    statistics, and the decompressed model scores what the report says."""
    torch.manual_seed(0)
    dense = arch_mod.build("squeeze.zoo:ResNet", {"input_shape": [1, 8, 8], "num_classes": 10})
    train(dense, digits, TrainConfig(epochs=3, lr=3e-3), progress=False)
    ckpt = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(ckpt))
    rc = main(["compress", str(ckpt), "--arch", "squeeze.zoo:ResNet", "--data", "digits", "--dim", "64", "--epochs", "4", "--patience", "2", "--qat-steps", "10", "--json"])
    report = _json(capsys.readouterr().out)
    assert rc == 0 and len(report["trials"]) == 4
    out = tmp_path / "resnet.sqz"
    f = fmt.read(out)
    assert any(k.endswith("running_var") for k in f.extras)
    assert accuracy(loading.load(out), digits.x_test, digits.y_test) == pytest.approx(report["accuracy"], abs=1e-6)


class _World(Search):
    """A search over a made-up (d, encoding) plane: bytes grow linearly with d, and an encoding
    passes the threshold from a d of its own (8 levels: 1,400; 16 levels: 1,024; float16: 768)."""

    COST = {"f16": (560, 2.0), "q8": (680, 0.355), "q16": (720, 0.5)}  # fixed bytes, bytes per value
    PASS = {"f16": 768, "q8": 1400, "q16": 1024}

    def __init__(self, config: CompressConfig):
        self.config, self.dims, self.candidates, self.floats, self.probes, self.interrupted = config, 3690, [], {}, {}, False
        self.D, self.solved, self.out_of_time, self.deadline, self.fit_seconds = 10**6, set(), False, None, []  # max_dim below D: no least-squares copy

    def fit(self, d: int) -> bool:
        self.floats[d] = None
        return True

    def candidate(self, d: int, enc: str, quick: bool = False) -> Candidate:
        fixed, per = self.COST[enc]
        c = Candidate(d=d, encoding=enc, bytes=fixed + math.ceil(per * d), payload_bytes=math.ceil(per * d), val_accuracy=0.95 if d >= self.PASS[enc] else 0.5, val_agreement=0.0, epochs=1, seconds=0.0)
        self.candidates.append(c)
        return c


def test_target_tries_the_largest_d_below_the_best_file_when_doubling_overshoots():
    """The GRU of benchmarks/target_vs_hand.py: 16 levels pass at d = 1,024; 8 levels fail there
    and doubling them (2,048) would make a larger file, yet 8 levels pass below it at 1,400-1,560."""
    world = _World(CompressConfig(target=0.9, level_grid=(8, 16), margin=0.0, max_fits=12))
    search_target(world, threshold=0.9)
    kept, reached = choose(world.candidates, threshold=0.9)
    best16 = min(c.bytes for c in world.candidates if c.encoding == "q16" and c.val_accuracy > 0.9)
    assert reached and kept.encoding == "q8" and 1400 <= kept.d < 2048 and kept.bytes < best16
    assert 2048 not in world.floats and len(world.floats) <= world.config.max_fits


@pytest.mark.parametrize("rate", [0.1, 3.0])
def test_a_fit_that_bottoms_out_early_is_tried_again_at_a_tenth_of_the_rate(teacher, digits, monkeypatch, rate):
    """A fit whose validation objective is best within the first half of its patience is fitted
    again from zero at a tenth of the rate; the better on the validation objective is kept, and
    the refit trains at the kept rate."""
    import dataclasses

    import squeeze.confirm as confirm_module
    from squeeze.frontier import SLOWER, default_measure

    _, model, _ = teacher
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    s = Search(model, build, digits, CompressConfig(target=0.95, epochs=12, patience=30, qat_steps=20, lr=rate), default_measure, None, False, None)
    assert s.fit(64)  # 12 epochs with a patience of 30: every fit bottoms out "early"
    objective = {lr: train(s.subspace(64), s.search_data, dataclasses.replace(s.train_cfg, lr=lr), teacher=model, progress=False).val_loss for lr in (rate, rate * SLOWER)}
    assert objective[rate] != objective[rate * SLOWER]
    assert s.rates[64] == min(objective, key=objective.get)
    assert s.rates[64] == pytest.approx({0.1: 0.1, 3.0: 0.3}[rate])  # a sane rate stays; an absurd one is cut

    rates, real_train = [], confirm_module.train
    monkeypatch.setattr(confirm_module, "train", lambda sub, data, config, **kw: rates.append(config.lr) or real_train(sub, data, config, **kw))
    assert confirm_module.refit(s, s.candidate(64, "f16")) is not None
    assert rates == [s.rates[64]]


def test_a_fit_worse_than_a_smaller_d_is_tried_again_at_a_tenth_of_the_rate(teacher, digits, monkeypatch):
    """A fit that converged slowly is retried only when a smaller d fitted better on the
    validation objective (its rate is too large for this d)."""
    import squeeze.frontier as frontier

    _, model, _ = teacher
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    calls, real_train = [], frontier.train
    monkeypatch.setattr(frontier, "train", lambda sub, data, config, **kw: calls.append(config.lr) or real_train(sub, data, config, **kw))
    s = Search(model, build, digits, CompressConfig(target=0.95, epochs=8, patience=4, lr=0.1), default_measure, None, False, None)
    assert s.fit(64) and calls == [0.1]  # still improving at its last epoch (8 > 4 // 2): not retried
    s.objectives[32] = 0.0  # a smaller d that fitted perfectly
    assert s.fit(128) and calls == [0.1, 0.1, pytest.approx(0.01)]


def test_mixed_inputs_teach_the_student_the_teacher_between_training_images(teacher, digits):
    """``mix`` (compress's default) adds the KL divergence to the teacher on mixtures of pairs of
    training images: the student then matches the teacher on mixtures of images neither saw."""
    import torch.nn.functional as F

    from squeeze.subspace import Subspace, SubspaceConfig

    _, model, _ = teacher
    assert CompressConfig().mix > 0 and TrainConfig().mix == 0
    g = torch.Generator().manual_seed(1)
    x = digits.x_test
    lam = torch.rand((len(x), 1, 1, 1), generator=g)
    mixed = lam * x + (1 - lam) * x[torch.randperm(len(x), generator=g)]
    kl = {}
    for mix in (0.0, 1.0):
        sub = Subspace(MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,)), SubspaceConfig(dim=256, seed=0))
        train(sub, digits, TrainConfig(epochs=15, lr=0.1, mix=mix), teacher=model, progress=False)
        kl[mix] = float(F.kl_div(F.log_softmax(predict(sub, mixed), 1), F.log_softmax(predict(model, mixed), 1), log_target=True, reduction="batchmean"))
    assert kl[1.0] < 0.8 * kl[0.0]  # measured: 0.072 against 0.114
