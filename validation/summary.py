"""A short plain-text summary of one batch's validation, for the terminal and a Prefect artifact.

It names the decision (loaded / refused), rows quarantined and warned, and per failing rule its severity,
counts and a few examples. Examples are built by the checks, which never show raw identifiers or birth dates.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _decision(outcome: Any) -> str:
    rows = outcome.row_failures
    n_q = int(rows.loc[rows["severity"] != "warn", "row_number"].nunique()) if len(rows) else 0
    n_w = int(rows.loc[rows["severity"] == "warn", "row_number"].nunique()) if len(rows) else 0
    if outcome.file_errors:
        return "REFUSED: the whole file is not loaded"
    if n_q:
        return f"loaded with {n_q} row(s) in quarantine" + (f", {n_w} row(s) with warnings" if n_w else "")
    if n_w:
        return f"loaded; {n_w} row(s) with warnings"
    return "loaded; every rule passed"


def summarise(outcome: Any, file_name: str) -> str:
    """Plain text: decision, file errors, one line per failing rule with examples, then the rules that passed."""
    lines = [f"Validation of {file_name}: {_decision(outcome)}"]
    for err in outcome.file_errors:
        lines.append(f"  ! {err}")
    rr: pd.DataFrame = outcome.rule_results
    if len(rr):
        failing = rr[rr["n_failed"] > 0]
        if len(failing):
            width = max(len(str(r)) for r in failing["rule"])
            lines.append(f"  {'rule':<{width}}  {'severity':<10} {'checked':>7} {'failed':>6}")
            for r in failing.itertuples(index=False):
                lines.append(f"  {r.rule:<{width}}  {r.severity:<10} {int(r.n_checked):>7} {int(r.n_failed):>6}")
                for ex in list(r.examples or [])[:3]:
                    lines.append(f"  {'':<{width}}    e.g. {ex}")
        n_pass = int((rr["n_failed"] == 0).sum())
        if n_pass:
            which = "other rule(s)" if len(failing) else "rule(s)"
            lines.append(f"  {n_pass} {which} passed: {', '.join(rr.loc[rr['n_failed'] == 0, 'rule'])}")
    docs = getattr(outcome, "docs_path", None)
    if docs:
        lines.append(f"  Data Docs: {docs}")
    return "\n".join(lines)


def summarise_markdown(outcome: Any, file_name: str) -> str:
    """The same summary as a Markdown block, for a Prefect markdown artifact."""
    return "```text\n" + summarise(outcome, file_name) + "\n```"
