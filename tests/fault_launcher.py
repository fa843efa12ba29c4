"""Test-only: `python -m tests.fault_launcher ARGS` is `python -m core.train ARGS` with a failure injected
at optimiser step N (N from the FAIL_AT_STEP environment variable). The production loop has no hook:
this wraps `core.fit.train_step` before the trainer runs.

Tests route `core.jobs.submit` here with `use_fault_launcher(monkeypatch, step)`."""

from __future__ import annotations

import os
import sys

FAIL_AT_STEP = "HSE_TEST_FAIL_AT_STEP"


def inject_failure(step: int) -> None:
    import core.fit

    real_step = core.fit.train_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise RuntimeError(f"injected failure at step {step}")
        return real_step(*args, **kwargs)

    core.fit.train_step = failing_step


def use_fault_launcher(monkeypatch, step: int) -> None:
    """Make this test's `core.jobs.submit` start jobs that fail at optimiser step `step`."""
    import core.jobs

    monkeypatch.setattr(core.jobs, "TRAIN_MODULE", "tests.fault_launcher")
    monkeypatch.setenv(FAIL_AT_STEP, str(step))


if __name__ == "__main__":
    inject_failure(int(os.environ[FAIL_AT_STEP]))
    from core.train import main

    sys.exit(main())
