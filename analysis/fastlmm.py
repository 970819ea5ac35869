"""Fast linear mixed models for the study's designs (issue #8): the public names in one place.

* :func:`fit_mixed` — formula interface; ``engine="auto"`` (fast, statsmodels as fallback), ``"fast"`` or
  ``"statsmodels"`` (the reference); returns :class:`LmmFit`, whose ``engine`` says which path fitted it.
* :func:`fit_lmm_fast` — arrays in (y, X, blocks, :class:`RETerm` list), :class:`FastLmmFit` out.
* :func:`cluster_bootstrap` — household bootstrap (block weights, warm starts), :class:`BootstrapResult`.
* :func:`fit_many` — many fits (outcomes, sensitivity analyses, imputations) across processes.

Method: lme4's profiled REML/ML deviance in the relative covariance factor theta, evaluated for all
independent blocks at once with stacked numpy arrays, once per pattern of block design where blocks repeat
(see :mod:`cohortflow.analysis.fastlmm_core`). R equivalent: ``lme4::lmer``.
"""

from .fastlmm_api import LmmFit, build_spec, fit_mixed
from .fastlmm_boot import BootstrapResult, cluster_bootstrap, fit_many, resample_clusters
from .fastlmm_core import FastLmmFit, LmmDesign, RETerm, fit_design, fit_lmm_fast, single_threaded_blas

__all__ = [
    "BootstrapResult",
    "FastLmmFit",
    "LmmDesign",
    "LmmFit",
    "RETerm",
    "build_spec",
    "cluster_bootstrap",
    "fit_design",
    "fit_lmm_fast",
    "fit_many",
    "fit_mixed",
    "resample_clusters",
    "single_threaded_blas",
]
