"""The workers' GIL switch interval (portal/gil.py, GIL_SWITCH_INTERVAL_MS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.gil import apply_switch_interval

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def interval():
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def test_an_interval_is_applied_and_zero_keeps_pythons(interval):
    assert apply_switch_interval(0.5) == pytest.approx(0.5)
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert apply_switch_interval(0) == pytest.approx(0.5)  # unchanged
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_the_setting_defaults_to_half_a_millisecond_and_reads_the_environment():
    def configured(value: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "GIL_SWITCH_INTERVAL_MS"}
        if value is not None:
            env["GIL_SWITCH_INTERVAL_MS"] = value
        code = "from config import Config; print(Config.GIL_SWITCH_INTERVAL_MS)"
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert configured(None) == "0.5"
    assert configured("2") == "2.0"
    assert configured("0") == "0.0"  # Python's own interval
