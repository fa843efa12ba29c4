"""Shared test setup: import `core` from the source tree and keep torch within the 2 CPU cores."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The CI machine has 2 cores; more threads only add contention between parallel test processes.
torch.set_num_threads(2)

from core.backbones import EfficientNetLite0Features  # noqa: E402  (needs REPO_ROOT on sys.path)


@pytest.fixture(scope="session")
def pretrained_extractor() -> Callable[[int], EfficientNetLite0Features]:
    """EfficientNet-Lite0 with its shipped ImageNet weights, built once per image size for the session."""
    built: dict[int, EfficientNetLite0Features] = {}

    def at_size(image_size: int) -> EfficientNetLite0Features:
        if image_size not in built:
            built[image_size] = EfficientNetLite0Features(pretrained=True, image_size=image_size)
        return built[image_size]

    return at_size


@pytest.fixture(scope="module")
def extractor(request: pytest.FixtureRequest, pretrained_extractor) -> EfficientNetLite0Features:
    """The pretrained extractor at the test module's ``IMAGE_SIZE``."""
    return pretrained_extractor(request.module.IMAGE_SIZE)
