"""Validation policy: which rules exist, how severe a failure of each is, and the thresholds they use.

Defaults live in `validation/defaults.yaml` (the choices a data manager would make); a source definition may
override them with a `validation:` mapping. The source model belongs to `ingest`, so it is read defensively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from cohortflow.config.loading import ConfigError

Severity = Literal["warn", "quarantine", "refuse"]
SEVERITIES: tuple[str, ...] = ("warn", "quarantine", "refuse")
DEFAULTS_PATH = Path(__file__).resolve().parent / "defaults.yaml"
SOURCE_RULES_PATH = Path(__file__).resolve().parent / "source_rules.yaml"

# Rules checked once per file (before any row is looked at) and rules checked per row.
FILE_RULES: tuple[str, ...] = ("required_columns", "item_columns_incomplete", "id_columns_empty", "no_rows",
                               "all_rows_failed")
ROW_RULES: tuple[str, ...] = (
    "id_format",
    "study_codes",
    "duplicate_key",
    "wave_window",
    "age_rule",
    "role_consistency",
    "sex_birth_year_consistency",
    "allowed_codes",
    "numeric_range",
    "instrument_age_range",
    "missing_share",
    "missing_share_high",
)

RULE_DESCRIPTIONS: dict[str, str] = {
    "required_columns": "the file has every canonical column (identifiers, arm/site/wave/role, dates)",
    "item_columns_incomplete": "an instrument in the file has all its item columns (none renamed or dropped)",
    "id_columns_empty": "every identifier column holds values",
    "no_rows": "the file has data rows",
    "all_rows_failed": "at least one row passes validation",
    "id_format": "household, person and subject identifiers are present and have the declared form",
    "study_codes": "arm, site, wave and role are codes of the study (site of the arm, wave measured in the arm)",
    "duplicate_key": "one row per (subject, informant, wave, role)",
    "wave_window": "the response date lies in the wave's window relative to the registration date (T0)",
    "age_rule": "the subject's age at the response date fits the role (self-report, parent report)",
    "role_consistency": "self-reports are about the informant, parent reports about someone else, "
    "and every answered instrument is meant for the role",
    "sex_birth_year_consistency": "a person's sex and birth year agree across rows and with earlier waves",
    "allowed_codes": "each item holds one of its response codes or a declared missing code",
    "numeric_range": "each numeric item lies in its declared range (or holds a declared missing code)",
    "instrument_age_range": "an instrument is only answered by subjects inside its age range",
    "missing_share": "the share of missing items of each instrument stays below the warning threshold",
    "missing_share_high": "the share of missing items of each instrument stays below the quarantine threshold",
}


@dataclass(frozen=True)
class Policy:
    """Severity per rule, thresholds, identifier patterns and missing codes for one source."""

    severity: dict[str, str]
    thresholds: dict[str, float]
    id_patterns: dict[str, str]
    missing_codes: tuple[float, ...]
    examples_per_rule: int = 3
    overrides: dict[str, Any] = field(default_factory=dict)

    def of(self, rule: str) -> str:
        return self.severity.get(rule, "quarantine")

    def key(self) -> tuple:
        """A hashable summary, used to cache suites."""
        return (
            tuple(sorted(self.severity.items())),
            tuple(sorted(self.thresholds.items())),
            tuple(sorted(self.id_patterns.items())),
            self.missing_codes,
        )


@cache
def _defaults() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULTS_PATH.read_text(encoding="utf-8"))
    unknown = set(data["severity"]) - set(FILE_RULES) - set(ROW_RULES)
    if unknown:
        raise ConfigError(f"{DEFAULTS_PATH}: severity names unknown rules {sorted(unknown)}")
    return data


@cache
def _source_rules() -> dict[str, Any]:
    if not SOURCE_RULES_PATH.is_file():
        return {}
    return dict(yaml.safe_load(SOURCE_RULES_PATH.read_text(encoding="utf-8")) or {})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _source_overrides(source: object | None) -> dict[str, Any]:
    """validation/source_rules.yaml for the source's name, then the source's own `validation:` mapping."""
    if source is None:
        return {}
    name = source.get("name") if isinstance(source, dict) else getattr(source, "name", None)
    listed = dict(_source_rules().get(str(name), {}) or {})
    raw = source.get("validation") if isinstance(source, dict) else getattr(source, "validation", None)
    if raw is None:
        return listed
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        raise ConfigError(f"source {source_label(source)}: `validation` must be a mapping, got {type(raw).__name__}")
    return _merge(listed, dict(raw))


def source_label(source: object | None) -> str:
    """'name vversion' of a source definition, or 'no source'."""
    if source is None:
        return "no source"
    get = source.get if isinstance(source, dict) else lambda k: getattr(source, k, None)
    return f"{get('name') or '?'} v{get('version') or '?'}"


def source_missing_codes(source: object | None) -> list[float]:
    """Numeric codes the source declares as missing (its `missing_codes` mapping code -> reason)."""
    if source is None:
        return []
    codes = source.get("missing_codes") if isinstance(source, dict) else getattr(source, "missing_codes", None)
    out: list[float] = []
    for k in (codes or {}):
        try:
            out.append(float(k))
        except (TypeError, ValueError):
            continue
    return out


def _declared_person_pattern(source: object | None) -> str | None:
    """identifiers.person_pattern of a source definition (pydantic model or dict), if any."""
    if source is None:
        return None
    ids = source.get("identifiers") if isinstance(source, dict) else getattr(source, "identifiers", None)
    if ids is None:
        return None
    pattern = ids.get("person_pattern") if isinstance(ids, dict) else getattr(ids, "person_pattern", None)
    return str(pattern) if pattern else None


def resolve_policy(source: object | None = None) -> Policy:
    """The defaults with the source's `validation:` overrides applied; bad overrides raise ConfigError."""
    d = _defaults()
    over = _source_overrides(source)
    label = source_label(source)
    severity = dict(d["severity"])
    sev_over = dict(over.get("severity") or {})
    # short form: rule -> severity at the top level of `validation:`
    sev_over.update({k: v for k, v in over.items() if k in severity})
    for rule, sev in sev_over.items():
        if rule not in severity:
            raise ConfigError(
                f"source {label}: validation.severity names unknown rule {rule!r}; known rules: {sorted(severity)}"
            )
        if sev not in SEVERITIES:
            raise ConfigError(
                f"source {label}: validation severity of {rule!r} is {sev!r}; use one of {list(SEVERITIES)}"
            )
        severity[rule] = sev
    thresholds = dict(d["thresholds"])
    for k, v in dict(over.get("thresholds") or {}).items():
        if k not in thresholds:
            raise ConfigError(f"source {label}: validation.thresholds names unknown threshold {k!r}; known {sorted(thresholds)}")
        try:
            value = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"source {label}: validation.thresholds.{k} must be a number, got {v!r}") from None
        if k.endswith("_min_rows"):
            if value < 1 or value != int(value):
                raise ConfigError(f"source {label}: validation.thresholds.{k} must be a whole number >= 1, got {v!r}")
        elif not 0.0 <= value <= 1.0:
            raise ConfigError(f"source {label}: validation.thresholds.{k} must lie in [0, 1], got {value}")
        thresholds[k] = value
    id_patterns = dict(d["id_patterns"])
    person_pattern = _declared_person_pattern(source)
    if person_pattern:  # the source's identifiers.person_pattern: {household} is the row's household id
        id_patterns["person_raw"] = id_patterns["subject_raw"] = person_pattern.replace("{household}",
                                                                                       "{household_raw}")
    id_patterns.update(dict(over.get("id_patterns") or {}))
    declared = over.get("missing_codes")
    if declared is None:
        declared = source_missing_codes(source) or d["missing_codes"]
    missing = tuple(sorted({float(c) for c in declared}))
    return Policy(
        severity=severity,
        thresholds=thresholds,
        id_patterns=id_patterns,
        missing_codes=missing,
        examples_per_rule=int(d.get("examples_per_rule", 3)),
        overrides=over,
    )
