"""``logitloss.torch``'s drop-in modules against ``torch.nn``'s, and the training example."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from logitloss.torch import BCEWithLogitsLoss, CrossEntropyLoss  # noqa: E402

RNG = np.random.default_rng(3)
EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "train_torch.py"


def _pair(shape: tuple[int, ...]) -> tuple[Any, Any]:
    """The same float64 leaf tensor twice, one for each library's loss."""
    a = RNG.standard_normal(shape) * 3
    return (torch.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True))


def _same(ours: Any, theirs: Any, x: Any, y: Any) -> None:
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-13, atol=1e-14)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5), (4,)])
def test_cross_entropy_loss_is_a_drop_in(reduction: str, shape: tuple[int, ...]) -> None:
    weight = torch.tensor(RNG.uniform(0.5, 2, 4))
    target = torch.tensor(RNG.integers(0, 4, shape[:1] + shape[2:] if len(shape) > 1 else ()))
    if target.ndim:
        target.view(-1)[0] = -1
    kw = dict(weight=weight, ignore_index=-1, reduction=reduction, label_smoothing=0.1)
    x, y = _pair(shape)
    _same(CrossEntropyLoss(**kw)(x, target), torch.nn.CrossEntropyLoss(**kw)(y, target), x, y)
    # Probability targets without class weights: the same mean as torch too.
    probs = torch.softmax(torch.tensor(RNG.standard_normal(shape)), dim=1 if len(shape) > 1 else 0)
    x, y = _pair(shape)
    kw = dict(reduction=reduction, label_smoothing=0.2)
    _same(CrossEntropyLoss(**kw)(x, probs), torch.nn.CrossEntropyLoss(**kw)(y, probs), x, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_loss_is_a_drop_in(reduction: str) -> None:
    pos_weight = torch.tensor(RNG.uniform(0.5, 3, 5))
    target = torch.tensor(RNG.uniform(0, 1, (4, 5)))
    x, y = _pair((4, 5))
    ours = BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)(x, target)
    theirs = torch.nn.BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)(y, target)
    _same(ours, theirs, x, y)


def test_positional_arguments_are_torchs() -> None:
    """torch's positional order: weight, size_average, (ignore_index,) reduce, reduction, ..."""
    w = torch.ones(3)
    ce = CrossEntropyLoss(w, None, 2, None, "sum", 0.3)
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (2, "sum", 0.3)
    bce = BCEWithLogitsLoss(w, None, None, "none", 2 * w)
    assert bce.reduction == "none" and torch.equal(bce.pos_weight, 2 * w)


def test_weights_are_buffers() -> None:
    """Like torch's: in the state_dict, moved and cast by ``.to``; None is no buffer."""
    ce = CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]))
    bce = BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))
    assert set(ce.state_dict()) == set(torch.nn.CrossEntropyLoss(torch.ones(2)).state_dict())
    assert set(bce.state_dict()) == {"pos_weight"}
    assert ce.to(torch.float64).weight.dtype == torch.float64
    assert dict(CrossEntropyLoss().named_buffers()) == {}
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    assert ce(x, torch.tensor([1])).dtype == torch.float64


def test_additions_and_refusals() -> None:
    x = torch.tensor([[3.0, 0.0, -2.0]])
    plain = CrossEntropyLoss()(x, torch.tensor([0]))
    assert CrossEntropyLoss(z_loss=0.1)(x, torch.tensor([0])) > plain
    z = torch.ones(1, 3)
    smoothed = BCEWithLogitsLoss(label_smoothing=0.2)(x, z)
    assert smoothed > BCEWithLogitsLoss()(x, z)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: `size_average` \(deprecated in"):
        CrossEntropyLoss(size_average=True)
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: `reduce` \(deprecated in torch\)"):
        BCEWithLogitsLoss(reduce=False)
    with pytest.raises(ValueError, match=r"`reduction` must be 'none', 'mean' or 'sum'"):
        CrossEntropyLoss(reduction="elementwise_mean")
    with pytest.raises(ValueError, match=r"`label_smoothing` must be in \[0, 1\]"):
        BCEWithLogitsLoss(label_smoothing=-0.1)
    assert "z_loss=0.0" in repr(CrossEntropyLoss())


def test_all_padding_batch_trains_on() -> None:
    """A batch whose targets are all ignore_index: loss 0 and zero gradients, not NaN."""
    x = torch.randn(3, 4, requires_grad=True)
    loss = CrossEntropyLoss()(x, torch.full((3,), -100))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros(3, 4))
    assert torch.isnan(torch.nn.CrossEntropyLoss()(x, torch.full((3,), -100)))


def test_training_example_runs_and_learns(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("train_torch", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history = example.main(epochs=3, n=1024, batch_size=128)
    assert len(history) == 3 and all(np.isfinite(history))
    assert history[-1] < 0.8 * history[0]
    assert "epoch 3: loss" in capsys.readouterr().out
