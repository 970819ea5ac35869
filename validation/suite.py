"""Expectation suites generated from the source, study and instrument definitions (one per source version).

A suite holds one expectation per rule: `required_columns` as a table expectation on the mapped frame, and
for every row rule an `expect_column_values_to_be_null` on the rule's derived column `check__<rule>` (the
check writes a short reason into the column for each failing row, see `checks.py`). Grouping per rule keeps
GX's cost (about 8 ms per expectation whatever the row count) independent of the number of items, while the
allowed codes, ranges, windows and age rules come from the definitions and are listed in the expectation's
notes, which Data Docs shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .checks import ItemSpec
from .contract import REQUIRED_COLUMNS
from .policy import ROW_RULES, RULE_DESCRIPTIONS, Policy, resolve_policy, source_label

CHECK_PREFIX = "check__"


def check_column(rule: str) -> str:
    """Name of the derived column that carries a rule's per-row failure reason."""
    return f"{CHECK_PREFIX}{rule}"


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation of a suite, independent of Great Expectations' classes."""

    rule: str
    kind: str  # GX expectation class name
    kwargs: tuple[tuple[str, Any], ...]
    severity: str
    description: str
    notes: str


@dataclass
class SuiteSpec:
    """A generated suite: its name, the policy, the item specs and the expectations."""

    name: str
    source_label: str
    policy: Policy
    items: dict[str, ItemSpec]
    instruments: dict[str, Instrument]
    expectations: list[ExpectationSpec]
    _gx_suite: Any = None

    @property
    def rules(self) -> list[str]:
        return [e.rule for e in self.expectations]

    def new_gx_suite(self) -> Any:
        """A new Great Expectations ExpectationSuite with every expectation, built in one go (imports GX)."""
        import great_expectations as gx
        import great_expectations.expectations as gxe

        exps = [
            getattr(gxe, e.kind)(**dict(e.kwargs), description=e.description, notes=e.notes,
                                 meta={"rule": e.rule, "severity": e.severity})
            for e in self.expectations
        ]
        return gx.ExpectationSuite(name=self.name, expectations=exps)

    def gx_suite(self) -> Any:
        """The suite used for in-memory validation, built once per source version."""
        if self._gx_suite is None:
            self._gx_suite = self.new_gx_suite()
        return self._gx_suite


def item_specs(instruments: dict[str, Instrument]) -> dict[str, ItemSpec]:
    """Item key -> allowed codes or numeric range, from the instrument definitions."""
    out: dict[str, ItemSpec] = {}
    for code, inst in instruments.items():
        for item in inst.items:
            rs = inst.response_scale_of(item)
            out[inst.item_key(item.code)] = ItemSpec(
                key=inst.item_key(item.code),
                instrument=code,
                codes=tuple(float(c) for c in rs.codes) if rs.options else None,
                numeric=tuple(rs.numeric) if rs.numeric is not None else None,  # type: ignore[arg-type]
                integer=rs.integer,
            )
    return out


def _codes_text(codes: list[float]) -> str:
    ints = sorted(int(c) for c in codes)
    if ints == list(range(ints[0], ints[-1] + 1)) and len(ints) > 2:
        return f"{ints[0]}..{ints[-1]}"
    return ",".join(str(c) for c in ints)


def _rule_notes(rule: str, study: Study, instruments: dict[str, Instrument], items: dict[str, ItemSpec],
                policy: Policy) -> str:
    """What the definitions say for a rule, in a line or two a data manager can read."""
    missing = ", ".join(f"{c:g}" for c in policy.missing_codes)
    if rule == "allowed_codes":
        per_inst: dict[str, set[str]] = {}
        for spec in items.values():
            if spec.codes is not None:
                per_inst.setdefault(spec.instrument, set()).add(_codes_text(list(spec.codes)))
        body = "; ".join(f"{k}: {' / '.join(sorted(v))}" for k, v in sorted(per_inst.items()))
        return f"Allowed codes per instrument: {body}. Declared missing codes: {missing}."
    if rule == "numeric_range":
        ranges = [f"{k}: {s.numeric[0]:g}..{s.numeric[1]:g}" for k, s in items.items() if s.numeric]
        return ("Ranges: " + "; ".join(ranges)) if ranges else "No numeric items in the definitions."
    if rule == "wave_window":
        return "Windows (days after T0): " + "; ".join(
            f"{w.code}: {w.window_days[0]}..{w.window_days[1]}" for w in study.waves)
    if rule == "age_rule":
        return "Ages (completed years at the response date): " + "; ".join(
            f"{r.code}: {'' if r.min_age_years is None else f'{r.min_age_years:g}'}.."
            f"{'' if r.max_age_years is None else f'{r.max_age_years:g}'}" for r in study.roles)
    if rule == "id_format":
        return "Patterns: " + "; ".join(f"{k}: {v}" for k, v in policy.id_patterns.items())
    if rule in ("missing_share", "missing_share_high"):
        t = policy.thresholds
        return (f"Warn above {t['missing_share_warn']:.0%}, quarantine above {t['missing_share_high']:.0%} of an "
                f"instrument's items missing (blank or a declared missing code: {missing}).")
    if rule == "role_consistency":
        return "Roles per instrument: " + "; ".join(f"{k}: {', '.join(i.roles)}" for k, i in sorted(instruments.items()))
    if rule == "instrument_age_range":
        return "Age ranges: " + "; ".join(
            f"{k}: {i.age_range_years[0]:g}..{i.age_range_years[1]:g}" for k, i in sorted(instruments.items())
            if i.age_range_years)
    return ""


_CACHE: dict[tuple, SuiteSpec] = {}


def _suite_name(source: object | None) -> str:
    label = source_label(source)
    return "cohortflow_" + "".join(c if c.isalnum() else "_" for c in label).strip("_")


def build_suite(source: object | None, study: Study, instruments: dict[str, Instrument]) -> SuiteSpec:
    """The suite of a source version, built in one go from the definitions and cached.

    The cache key is the source's name and version, its policy, the study and the instruments' codes and
    versions: a definition change that bumps a version builds a new suite.
    """
    policy = resolve_policy(source)
    key = (source_label(source), policy.key(), study.short_name,
           tuple(sorted((c, i.version) for c, i in instruments.items())))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    items = item_specs(instruments)
    exps = [ExpectationSpec(
        rule="required_columns",
        kind="ExpectTableColumnsToMatchSet",
        kwargs=(("column_set", list(REQUIRED_COLUMNS)), ("exact_match", False)),
        severity=policy.of("required_columns"),
        description=f"required_columns [{policy.of('required_columns')}]: {RULE_DESCRIPTIONS['required_columns']}",
        notes="Required: " + ", ".join(REQUIRED_COLUMNS),
    )]
    has_numeric = any(s.numeric is not None for s in items.values())
    for rule in ROW_RULES:
        if rule == "numeric_range" and not has_numeric:
            continue  # no numeric item in the definitions: nothing to check, no GX cost
        sev = policy.of(rule)
        exps.append(ExpectationSpec(
            rule=rule,
            kind="ExpectColumnValuesToBeNull",
            kwargs=(("column", check_column(rule)),),
            severity=sev,
            description=f"{rule} [{sev}]: {RULE_DESCRIPTIONS[rule]}",
            notes=_rule_notes(rule, study, instruments, items, policy),
        ))
    suite = SuiteSpec(name=_suite_name(source), source_label=source_label(source), policy=policy, items=items,
                      instruments=dict(instruments), expectations=exps)
    _CACHE[key] = suite
    return suite


def clear_suite_cache() -> None:
    """Forget built suites (tests; after definitions change within one process)."""
    _CACHE.clear()
