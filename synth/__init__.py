"""cohortflow.synth: the generator of realistic synthetic studies (demo data and tests).

`generate_study(out_dir, factor, seed, faults)` writes exports per docs/design.md Contract 7 under
`out_dir/inbox/`, the truth under `out_dir/truth/` and returns a `StudyManifest`.
"""

from .faults import FAULTS
from .generate import DEFAULT_SEED, generate_study
from .items import score_sum
from .manifest import InjectedFault, ManifestFile, StudyManifest

__all__ = ["DEFAULT_SEED", "FAULTS", "InjectedFault", "ManifestFile", "StudyManifest", "generate_study", "score_sum"]
