"""``logitloss.keras`` on each Keras backend: ``tests/keras_checks.py`` runs every check in one
subprocess per backend (``KERAS_BACKEND`` is read once per process), and each check is a test
here. What each check compares with is in its docstring there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("keras_checks.py")
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
CHECKS = [
    "parity_binary",
    "parity_categorical",
    "parity_categorical_axis",
    "parity_sparse",
    "parity_binary_focal",
    "parity_categorical_focal",
    "extremes",
    "binary_focal_by_backend",
    "extreme_gradients",
    "gradients_match_keras",
    "float16_labels_exact",
    "float_sparse_labels",
    "errors",
    "config_round_trip",
    "fit",
    "fit_masked_sequence",
    "mixed_float16",
    "save_load",
    "distributed",
    "readme_example",
]
_RUNS: dict[str, dict[str, Any]] = {}


def run_checks(backend: str) -> dict[str, Any]:
    """The checks' results on ``backend`` (one subprocess, run once per session)."""
    if backend not in _RUNS:
        pytest.importorskip("keras")
        pytest.importorskip(BACKENDS[backend])
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                              env=env, timeout=600, check=False)  # fmt: skip
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("KERAS_CHECKS ")]
        if not lines:
            pytest.fail(f"keras_checks.py on {backend} printed no results:\n{done.stderr[-4000:]}")
        _RUNS[backend] = json.loads(lines[-1].removeprefix("KERAS_CHECKS "))
    return _RUNS[backend]


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_keras(backend: str, check: str) -> None:
    results = run_checks(backend)
    assert check in results, f"{check} did not run on {backend}"
    assert results[check]["ok"], results[check]["detail"]


def test_every_check_is_listed() -> None:
    """A check added to keras_checks.py is a test here too."""
    source = SCRIPT.read_text(encoding="utf-8")
    defined = [line.split("(")[0].removeprefix("def ") for line, previous in
               zip(source.splitlines()[1:], source.splitlines(), strict=False)
               if previous == "@check"]  # fmt: skip
    assert defined == CHECKS
