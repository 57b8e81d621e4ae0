"""Train a small two-headed MLP with logitloss's drop-in PyTorch losses.

    python examples/train_torch.py            # train with logitloss's modules
    python examples/train_torch.py --compare  # the same run with torch.nn's too, both timed

One head picks one of 5 classes (``CrossEntropyLoss`` with label smoothing and a padding label
to ignore), the other predicts 8 independent tags (``BCEWithLogitsLoss`` with ``pos_weight`` for
the rarer positives). The only change from a plain PyTorch loop is the import line below
(``from torch.nn import ...``). Synthetic data, a few seconds on a CPU; the loss goes down.
"""

from __future__ import annotations

import argparse
import time

import torch

from logitloss.torch import BCEWithLogitsLoss, CrossEntropyLoss

LOSSES = {
    "logitloss": (CrossEntropyLoss, BCEWithLogitsLoss),
    "torch.nn": (torch.nn.CrossEntropyLoss, torch.nn.BCEWithLogitsLoss),
}

FEATURES, CLASSES, TAGS, PAD = 20, 5, 8, -100


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs, class labels (10% padding, ignored) and tag labels from random linear teachers."""
    x = torch.randn(n, FEATURES, generator=generator)
    classes = (x @ torch.randn(FEATURES, CLASSES, generator=generator)).argmax(dim=1)
    padding = torch.rand(n, generator=generator) < 0.1
    classes = torch.where(padding, torch.full_like(classes, PAD), classes)
    tags = (x @ torch.randn(FEATURES, TAGS, generator=generator) > 1.0).float()
    return x, classes, tags


class Net(torch.nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        )  # fmt: skip
        self.classes = torch.nn.Linear(hidden, CLASSES)
        self.tags = torch.nn.Linear(hidden, TAGS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.classes(h), self.tags(h)


def main(epochs: int = 8, n: int = 4096, batch_size: int = 128, seed: int = 0,
         verbose: bool = True, losses: str = "logitloss") -> list[float]:  # fmt: skip
    """Train with the loss modules of ``losses`` (a key of :data:`LOSSES`); return the mean
    training loss of each epoch."""
    cross_entropy_loss, bce_with_logits_loss = LOSSES[losses]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, classes, tags = make_data(n, generator)
    # Positives are rarer than negatives: weigh them by the ratio, per tag.
    positives = tags.mean(dim=0).clamp(min=0.01)
    class_loss = cross_entropy_loss(ignore_index=PAD, label_smoothing=0.05)
    tag_loss = bce_with_logits_loss(pos_weight=(1 - positives) / positives)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            class_logits, tag_logits = model(x[batch])
            loss = class_loss(class_logits, classes[batch]) + tag_loss(tag_logits, tags[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append(total / n)
        if verbose:
            print(f"epoch {epoch + 1}: loss {history[-1]:.4f}")
    return history


def compare(rounds: int = 3) -> dict[str, float]:
    """Seconds per run (the best of ``rounds``, alternating) with each set of loss modules,
    after one warm-up run of each; the loss histories agree to float32 rounding."""
    best = dict.fromkeys(LOSSES, float("inf"))
    histories = {name: main(epochs=1, verbose=False, losses=name) for name in LOSSES}
    for _ in range(rounds):
        for name in LOSSES:
            start = time.perf_counter()
            histories[name] = main(verbose=False, losses=name)
            best[name] = min(best[name], time.perf_counter() - start)
    for name in LOSSES:
        print(f"{name}: {best[name]:.2f} s, final loss {histories[name][-1]:.6f}")
    return best


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="time logitloss against torch.nn")
    if parser.parse_args().compare:
        compare()
    else:
        main()
