"""How much of GaussPainter's correction to apply, from the scene's compression ratio (no torch: Blender's own
Python imports this).

Below about 60x (INRIA basis), UGC's raw renders are near-lossless and the shipped painter's own error (about
1/100) costs dB; from about 100x up, its correction gains. Fitted on training-scene pairs only, never on the
held-out scenes (docs/painter.md, "Measurements").
"""

from __future__ import annotations

import math

NO_RESTORATION_BELOW_RATIO = 60.0
FULL_RESTORATION_FROM_RATIO = 100.0


def strength_for_ratio(ratio: float | None) -> float:
    """Restoration strength in [0, 1] for a scene compressed `ratio` times; 1 when the ratio is unknown.

    Linear in log(ratio) between the two thresholds.
    """
    if ratio is None or not math.isfinite(ratio):
        return 1.0
    ramp = math.log(max(ratio, 1e-9) / NO_RESTORATION_BELOW_RATIO) / math.log(
        FULL_RESTORATION_FROM_RATIO / NO_RESTORATION_BELOW_RATIO)
    return float(min(1.0, max(0.0, ramp)))
