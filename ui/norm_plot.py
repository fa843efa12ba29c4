"""The feature-norm histogram of a run, one overlaid bar series per class."""

from __future__ import annotations

import numpy as np

from core import views
from core.runs import Run
from core.views import class_name
from ui.plotly_spec import PALETTE, RawFigure, arr

NORM_BINS = 60


def norm_histogram(run: Run) -> RawFigure:
    bins = np.linspace(0.0, float(np.nanmax(run.norm)) * 1.02 + 1e-9, NORM_BINS + 1)
    centres = (bins[:-1] + bins[1:]) / 2
    traces = []
    for i, c in enumerate(np.unique(run.label)):
        counts = views.histogram(run.norm[run.label == c], bins)
        row = int(np.flatnonzero(run.label == c)[0])
        traces.append(
            {
                "type": "bar",
                "x": arr(centres),
                "y": arr(counts),
                "name": class_name(run, row),
                "opacity": 0.6,
                "marker": {"color": PALETTE[i % len(PALETTE)]},
            }
        )
    return RawFigure(
        traces,
        {
            "barmode": "overlay",
            "bargap": 0,
            "height": 300,
            "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
            "xaxis": {"title": {"text": "pre-normalisation feature norm ‖f‖"}},
            "yaxis": {"title": {"text": "samples"}},
        },
    )
