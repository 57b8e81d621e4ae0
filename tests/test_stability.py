"""``logitloss stability``, ``--version`` and ``--help``: the sweep's errors against values
computed here independently (mpmath on a few points), the plot written atomically, usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import logitloss
from logitloss import cli

mpmath = pytest.importorskip("mpmath")
pytest.importorskip("matplotlib")


def test_table_json_and_plot(tmp_path: Path, capsys) -> None:
    png = tmp_path / "s.png"
    assert cli.main(["stability", "--json", "--plot", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]  # no temporary left
    for kind, data in result["losses"].items():
        summary = data["summary"]
        assert (
            summary["logitloss"]["max_ulp"] <= 1.0 and summary["logitloss"]["wrong_nan_inf"] == 0
        ), kind
        assert summary["naive"]["wrong_nan_inf"] > 0, kind  # log(0) somewhere in the sweep
        assert summary["TensorFlow"]["max_ulp"] > 1e6, kind
    # One point checked by hand: TF's sigmoid at x = 24, z = 1 - 2^-24 in float32 loses the
    # loss to cancellation; recompute TF's formula and the exact value here.
    sig = result["losses"]["sigmoid"]
    i = sig["logits"].index(24.0)
    x, z = np.float32(24.0), np.float32(1 - 2.0**-24)
    tf = np.maximum(x, 0) - x * z + np.log1p(np.exp(-abs(x)))
    with mpmath.workdps(50):
        xm, zm = mpmath.mpf(float(x)), mpmath.mpf(float(z))
        exact = zm * mpmath.log1p(mpmath.exp(-xm)) + (1 - zm) * mpmath.log1p(mpmath.exp(xm))
        ulp = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(exact, 2)) - 23)
        error = float(abs(mpmath.mpf(float(tf)) - exact) / ulp)
    assert sig["errors"]["TensorFlow"][i] >= error * (1 - 1e-9)  # the worst over labels
    assert error > 1e6


def test_table_and_usage(capsys) -> None:
    assert cli.main(["stability", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "ULPs of float16" in out and all(k in out for k in ("sigmoid", "sparse", "TensorFlow"))
    assert cli.main(["stability", "--dtype", "int8"]) == 2
    assert cli.main(["stability", "--plot", "/nonexistent/dir/s.png"]) == 1
    assert "no such directory" in capsys.readouterr().err


def test_version_and_help_examples(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"logitloss {logitloss.__version__}"
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command.example.splitlines()[0] in text, command.name
        assert cli.main([command.name, "--help"]) == 0
        assert "example:" in capsys.readouterr().out


def test_subprocess(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "logitloss", "stability"], capture_output=True,
                          text=True, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "" and "logitloss" in done.stdout
