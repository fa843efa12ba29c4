"""Shared test setup: import `core` from the source tree and keep torch within the 2 CPU cores."""

import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The CI machine has 2 cores; more threads only add contention between parallel test processes.
torch.set_num_threads(2)
