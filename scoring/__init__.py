"""Scoring: item values -> scale scores, cut-offs, bands, classifications; reliable change; reliability.

`cohortflow.scoring.reliability` (alpha, omega) imports scipy and is not imported here.
"""

from .change import reliable_change, reliable_change_between_waves, reliable_change_for_scale
from .engine import (
    SCORE_COLUMNS,
    ScoringError,
    definition_fingerprint,
    item_values_fingerprint,
    score_all,
    score_instrument,
)

__all__ = [
    "SCORE_COLUMNS",
    "ScoringError",
    "definition_fingerprint",
    "item_values_fingerprint",
    "reliable_change",
    "reliable_change_between_waves",
    "reliable_change_for_scale",
    "score_all",
    "score_instrument",
]
