"""torchrun entry point for the tests of a failing rank: `core.train.main` with a fault injected into
ONE rank (RANK == HSE_TEST_FAULT_RANK) at its HSE_TEST_FAULT_STEP-th metrics all-reduce:
HSE_TEST_FAULT=error raises a Python error there, HSE_TEST_FAULT=abort kills the process with
SIGABRT (a native crash, as std::terminate does)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import distributed as du  # noqa: E402
from core import train  # noqa: E402

if os.environ.get("RANK") == os.environ.get("HSE_TEST_FAULT_RANK"):
    real_all_reduce = du.all_reduce
    calls = {"n": 0}

    def faulty_all_reduce(values, info, op="sum"):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == int(os.environ["HSE_TEST_FAULT_STEP"]):
            if os.environ["HSE_TEST_FAULT"] == "abort":
                os.abort()
            raise RuntimeError(f"injected failure in rank {os.environ['RANK']} at step {calls['n']}")
        return real_all_reduce(values, info, op)

    du.all_reduce = faulty_all_reduce

du.exit_rank(train.main())  # as core/train.py's __main__ does for a rank
