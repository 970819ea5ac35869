"""cohortflow: ingest, validate, score, link and model a longitudinal family cohort study."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cohortflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
