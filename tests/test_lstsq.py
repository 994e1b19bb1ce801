"""The top of compress's frontier: at d = D the file is the teacher's own weights, solved by least
squares (:mod:`squeeze.lstsq`), and the time limit that cuts the search for smaller files."""

from __future__ import annotations

import time

import pytest
import torch

from squeeze import format as fmt
from squeeze import loading
from squeeze.compress import CompressConfig, compress
from squeeze.data import load_data
from squeeze.dimension import count_params
from squeeze.fit import TrainConfig, distill_objective, predict, train
from squeeze.lstsq import teacher_in_subspace
from squeeze.subspace import Subspace, SubspaceConfig
from squeeze.zoo import MLP, ResNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _trained(build, digits, epochs=15):
    """A teacher whose initial weights come from seed 0, whatever ran before in this process."""
    torch.manual_seed(0)
    model = build()
    train(model, digits, TrainConfig(epochs=epochs, lr=3e-3), progress=False)
    return model.eval()


def test_the_solved_weights_are_the_teachers(digits):
    """A ResNet with BatchNorm (its buffers copied, not solved): at d = D the regenerated model
    predicts what the teacher predicts, and stays so once theta_d is rounded to float16; the
    iterate kept is the one the score liked best."""
    build = lambda: ResNet(input_shape=digits.input_shape, num_classes=10, widths=(4, 8))  # noqa: E731
    teacher = _trained(build, digits, epochs=3)
    D = count_params(build())
    sub = Subspace(build(), SubspaceConfig(dim=D, projection="sorf", seed=3))
    x, y = digits.x_train[:300], digits.y_train[:300]
    scores = []

    def score():  # of the iterate as a float16 file stores it
        fmt.round_for_storage_(sub, "float16")
        scores.append(float(distill_objective(predict(sub, x), y, predict(teacher, x), 1.0)))  # KL to the teacher alone
        return scores[-1]

    solve = teacher_in_subspace(sub, teacher, score=score)
    assert solve.residual < 0.05 and len(scores) >= 2 and score() == pytest.approx(min(scores[:-1]), rel=1e-6) == solve.score
    want = predict(teacher, digits.x_test).argmax(1)
    for dtype in ("float32", "float16"):
        fmt.round_for_storage_(sub, dtype)
        got = predict(sub.materialize(), digits.x_test).argmax(1)
        assert float((got == want).float().mean()) >= 0.98, dtype
    bn = [k for k in sub.extra_tensors() if k.endswith("running_mean")]
    assert bn and all(torch.equal(sub.extra_tensors()[k], teacher.state_dict()[k]) for k in bn)


def test_without_a_score_the_last_iterate_is_kept(digits):
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(16,))  # noqa: E731
    teacher = _trained(build, digits, epochs=3)
    sub = Subspace(build(), SubspaceConfig(dim=count_params(build()), seed=1))
    solve = teacher_in_subspace(sub, teacher, max_iter=7, tol=0)
    assert solve.iterations == 7 and solve.score is None


def test_only_a_plain_subspace_is_solved(digits):
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(16,))  # noqa: E731
    sub = Subspace(build(), SubspaceConfig(dim=count_params(build()), layerwise=True))
    with pytest.raises(ValueError, match="every tensor in the subspace"):
        teacher_in_subspace(sub, build())


def test_compress_starts_from_the_teachers_own_weights(digits, tmp_path):
    """A target search makes the d = D candidate without training, in float only (its theta_d
    does not quantize); it passes, so the promise never rests on a file worse than the teacher's
    copy, and a file written from it loads to the teacher's predictions."""
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(16,))  # noqa: E731
    teacher = _trained(build, digits)
    D = count_params(build())
    cfg = CompressConfig(target=0.99, epochs=6, patience=2, qat_steps=10, start_dim=64, max_fits=1, refit=False)
    result = compress(teacher, build, digits, cfg, progress=False)
    top = [c for c in result.candidates if c.d == D]
    assert [(c.encoding, c.method, c.epochs) for c in top] == [("f16", "lstsq", 0)]
    assert top[0].val_agreement >= 0.99 and top[0].passes(result.threshold)
    assert all(c.d < D for c in result.candidates if c.method != "lstsq")
    if result.kept is top[0]:  # nothing smaller was confirmed at 0.99
        fmt.save(result.sub, tmp_path / "copy.sqz", encoded=None)
        model = loading.load(tmp_path / "copy.sqz", build())
        agree = float((predict(model, digits.x_test).argmax(1) == predict(teacher, digits.x_test).argmax(1)).float().mean())
        assert result.reached and agree >= 0.99 and result.accuracy >= 0.99 * result.teacher_accuracy


def test_a_deadline_stops_training_after_the_epoch_it_passes(digits):
    model = MLP(input_shape=digits.input_shape, num_classes=10, hidden=(16,))
    res = train(model, digits, TrainConfig(epochs=50, lr=3e-3, patience=50), progress=False, deadline=time.monotonic())
    assert res.out_of_time and res.epochs_run == 1 and res.best_epoch == 1
    res = train(model, digits, TrainConfig(epochs=3, lr=3e-3, patience=50), progress=False, deadline=time.monotonic() + 3600)
    assert not res.out_of_time and res.epochs_run == 3


def test_the_time_limit_cuts_the_search_not_the_promise(digits):
    """With a limit too short for more than one epoch, one fit runs (cut after its first
    epoch), no other starts, the refit is skipped, and the result says so; the verdict is still
    the confirmation's."""
    build = lambda: MLP(input_shape=digits.input_shape, num_classes=10, hidden=(16,))  # noqa: E731
    teacher = _trained(build, digits)
    cfg = CompressConfig(target=0.98, qat_steps=10, start_dim=64, time_limit=0.01)
    result = compress(teacher, build, digits, cfg, progress=False)
    trained = [c for c in result.candidates if c.method != "lstsq"]
    assert result.out_of_time and not result.refitted and result.fits == 1  # one trained fit (the copy at D is not trained)
    assert {c.d for c in trained} == {64} and all(c.epochs == 1 for c in trained)
    assert result.kept is not None and result.reached == (result.confirm_interval[0] >= cfg.target)
    with pytest.raises(ValueError, match="time_limit"):
        CompressConfig(time_limit=0)


def test_a_negative_time_is_refused_in_flag_terms(tmp_path, capsys):
    """The CLI names its own flag; nothing is written and the exit is a usage error."""
    from squeeze_cli.app import main

    out = tmp_path / "never.sqz"
    rc = main(["compress", str(tmp_path / "absent.safetensors"), "--arch", "squeeze.zoo:MLP", "--data", "digits", "--time", "-5", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--time must be a number of seconds, 0 or more" in err and "Traceback" not in err and not out.exists()
