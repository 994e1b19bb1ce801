"""The held-out shares of ``compress``: sizes, disjointness, the interval, and a confirmation
share that no training and no ranking reads."""

from __future__ import annotations

import pytest
import torch

from squeeze.compress import CompressConfig, compress
from squeeze.data import Dataset, load_data
from squeeze.fit import TrainConfig, train
from squeeze.holdout import carve, holdout_size, share_interval
from squeeze.zoo import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n, k", [(50, 10), (400, 80), (1400, 210), (2000, 300), (4000, 400), (20000, 2000), (10**6, 2000)])
def test_holdout_size_grows_with_the_data_and_leaves_most_of_it_to_fit(n, k):
    assert holdout_size(n) == k
    assert 2 * holdout_size(n) <= 0.4 * n


def test_the_three_shares_are_disjoint_and_cover_the_training_split():
    digits = load_data("digits")
    search, fraction, confirm = carve(digits, "confirm")
    fit, val = search.validation_split(fraction)
    k = holdout_size(len(digits.y_train))
    assert len(val.y_train) == len(confirm.y_train) == k and len(fit.y_train) == len(digits.y_train) - 2 * k
    rows = lambda d: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(d.x_train, d.y_train)}  # noqa: E731
    everything = rows(digits)
    assert rows(fit) | rows(val) | rows(confirm) == everything
    assert not (rows(fit) & rows(confirm)) and not (rows(val) & rows(confirm))
    assert torch.equal(confirm.x_test, digits.x_test)  # the test split is carried, never carved
    same, tenth, none = carve(digits, "validation")
    assert same is digits and tenth == 0.1 and none is None


def test_the_confirmation_share_is_what_a_train_held_out_teacher_never_saw():
    """A teacher trained by squeeze.fit.train holds out its 10%: the confirmation share is inside it."""
    mnist = load_data("mnist5k")
    _, teacher_val = mnist.validation_split(0.1)
    _, _, confirm = carve(mnist, "confirm")
    assert torch.equal(confirm.x_train, teacher_val.x_train[: len(confirm.y_train)])


def test_share_interval():
    teacher = torch.tensor([1.0] * 90 + [0.0] * 10)
    r, lo, hi = share_interval(teacher.clone(), teacher, 0.9)
    assert (r, lo, hi) == (1.0, 1.0, 1.0)  # a copy of the teacher: no doubt
    student = teacher.clone()
    student[:9] = 0  # wrong on 9 of the teacher's 90
    r, lo, hi = share_interval(student, teacher, 0.9)
    assert r == pytest.approx(0.9) and lo < 0.9 < hi and hi - lo < 0.12
    r95 = share_interval(student, teacher, 0.95)
    assert r95[1] < lo and r95[2] > hi  # more confidence, a wider interval
    # an unpaired student with the same accuracy, wrong on other examples, is less certain
    other = torch.ones(100)
    other[[90, 91, 92, 93, 94, 95, 96, 97, 98]] = 0
    other[:10] = 0
    assert share_interval(other, teacher, 0.9)[2] - share_interval(other, teacher, 0.9)[1] > hi - lo


def test_the_confirmation_share_takes_no_part_in_training_or_ranking():
    """Scrambled labels on the confirmation share change only its verdict, not one trained bit
    or validation score."""
    digits = load_data("digits")
    _, _, confirm = carve(digits, "confirm")
    torch.manual_seed(0)
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))
    train(model, digits, TrainConfig(epochs=15, lr=3e-3), progress=False)
    n = len(digits.y_train)
    perm = torch.from_numpy(__import__("numpy").random.default_rng(1).permutation(n))  # the split's permutation
    idx = perm[: len(confirm.y_train)]
    y = digits.y_train.clone()
    y[idx] = (y[idx] + 1) % 10
    scrambled = Dataset(digits.name, digits.x_train, y, digits.x_test, digits.y_test, 10, digits.preprocessing)
    _, _, moved = carve(scrambled, "confirm")
    assert not torch.equal(moved.y_train, confirm.y_train) and torch.equal(moved.x_train, confirm.x_train)
    config = CompressConfig(dim=96, levels=8, target=0.9, epochs=15, patience=3, qat_steps=10, refit=False)
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    runs = [compress(model, build, d, config, progress=False) for d in (digits, scrambled)]
    strip = lambda r: [{k: v for k, v in c.as_dict().items() if k not in ("seconds", "wall_seconds", "confirm_share")} for c in r.candidates]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1]) and runs[0].candidates
    assert torch.equal(runs[0].sub.theta_d, runs[1].sub.theta_d)
    assert runs[0].confirm_share != runs[1].confirm_share  # the verdict did read it


def test_refit_trains_the_chosen_file_again_on_every_training_example():
    """The search and its verdict are the same with and without the refit; the kept (d,
    encoding) is then trained on the whole training split, and the file is that model."""
    digits = load_data("digits")
    torch.manual_seed(0)
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))
    train(model, digits, TrainConfig(epochs=15, lr=3e-3), progress=False)
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(32,))  # noqa: E731
    base = dict(dim=96, levels=8, target=0.9, epochs=15, patience=3, qat_steps=10)
    plain, refit = (compress(model, build, digits, CompressConfig(**base, refit=r), progress=False) for r in (False, True))
    strip = lambda r: [{k: v for k, v in c.as_dict().items() if k not in ("seconds", "wall_seconds", "test_accuracy")} for c in r.candidates]  # noqa: E731
    assert strip(plain) == strip(refit) and not plain.refitted and refit.refitted
    assert (refit.kept.d, refit.kept.encoding) == (plain.kept.d, plain.kept.encoding) and refit.kept.method.endswith("+refit")
    assert refit.confirm_interval == plain.confirm_interval  # the verdict is the searched model's
    assert not torch.equal(refit.sub.theta_d, plain.sub.theta_d)
    assert len(torch.unique(refit.sub.theta_d)) <= 8  # still 8 levels
    # the file is the refitted model: its reported test accuracy is that of the weights it holds
    from squeeze.fit import accuracy

    assert accuracy(refit.sub.materialize(), digits.x_test, digits.y_test) == pytest.approx(refit.accuracy, abs=1e-6)
    assert refit.accuracy > 0.5
