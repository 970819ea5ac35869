"""link_waves on hand-built warehouse frames with a known structure and injected conflicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.config.loading import ConfigError
from cohortflow.config.study import load_study
from cohortflow.warehouse.linkage import (
    LONG_COLUMNS,
    LinkageRules,
    link_waves,
    load_linkage_rules,
    snapshot_hash,
    wide_frame,
)

STUDY = load_study()
BASE = STUDY.baseline_wave
ARM = STUDY.cohort_arms[0]
W = STUDY.wave_codes  # baseline first in the shipped study
ROLES = {r.informant + ":" + r.subject: r.code for r in STUDY.roles}
SELF_ADULT, PARENT, SELF_CHILD = ROLES["self:adult"], ROLES["parent:child"], ROLES["self:child"]


def planned(wave: str) -> int:
    return STUDY.wave(wave).offset_days


class Builder:
    """Responses and scores of a small study; truth kept beside them."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.scores: list[dict] = []
        self.home: dict[str, str] = {}

    def add(self, hh: str, informant: str, subject: str, role: str, wave: str, day: int | None = None,
            reg: str = "2023-01-10", sex: str = "female", age_months: int = 400, score: float = 10.0,
            hh_in_row: str | None = None) -> int:
        """Add one response; `age_months` is the subject's age at registration."""
        rid = len(self.rows) + 1
        reg_ts = pd.Timestamp(reg)
        day = planned(wave) if day is None else day
        self.rows.append({"response_id": rid, "household_id": hh_in_row or hh, "person_id": informant,
                          "subject_id": subject, "role": role, "arm": ARM.code, "site": ARM.sites[0].code,
                          "wave": wave, "response_date": reg_ts + pd.Timedelta(days=day), "registration_date": reg_ts,
                          "days_since_t0": day, "subject_age_months": age_months + int(day / (365.25 / 12)), "subject_sex": sex})
        self.home.setdefault(informant, hh)
        self.home.setdefault(subject, hh)
        for scale, s in (("total", score), ("sub", score / 2)):
            self.scores.append({"response_id": rid, "instrument": "inst", "scale": scale, "score": s,
                                "above_cutoff": s >= 10})
        return rid

    def find(self, informant: str, subject: str, wave: str) -> int:
        return next(r["response_id"] for r in self.rows
                    if (r["person_id"], r["subject_id"], r["wave"]) == (informant, subject, wave))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.DataFrame(self.rows), pd.DataFrame(self.scores)


def clean_study() -> Builder:
    b = Builder()
    for h in range(3):
        hh = f"H{h}"
        for w in W:
            b.add(hh, f"{hh}-A", f"{hh}-A", SELF_ADULT, w, score=10 + h, sex="male")
            b.add(hh, f"{hh}-A", f"{hh}-C", PARENT, w, score=20 + h, age_months=120)
            b.add(hh, f"{hh}-C", f"{hh}-C", SELF_CHILD, w, score=30 + h, age_months=120)
    return b


def test_clean_study_links_exactly_without_conflicts():
    b = clean_study()
    r, s = b.frames()
    ld = link_waves(r, s, None, STUDY)
    assert ld.conflicts.empty
    who = ld.persons.set_index("person_id")
    assert who.loc["H0-A", "waves_as_informant"] == ",".join(W) and who.loc["H0-A", "waves_as_subject"] == ",".join(W)
    assert who.loc["H0-C", "waves_as_informant"] == ",".join(W)
    assert dict(zip(ld.persons["person_id"], ld.persons["household_id"], strict=True)) == b.home
    assert list(ld.long.columns[: len(LONG_COLUMNS)]) == LONG_COLUMNS
    assert len(ld.long) == len(r) * 2
    # parent report is about the child: subject = child, informant = parent
    par = ld.long[ld.long["role"] == PARENT]
    assert (par["person_id"].str.endswith("-C")).all() and (par["informant_id"].str.endswith("-A")).all()
    # follow-up time: planned offset in days, months = days / (365.25 / 12)
    for w in W:
        d = ld.long.loc[ld.long["wave"] == w, "days_since_t0"].unique()
        assert list(d) == [planned(w)]
        m = ld.long.loc[ld.long["wave"] == w, "months_since_t0"].iloc[0]
        assert m == pytest.approx(planned(w) * 12 / 365.25)
    # baseline score: the subject's score for the same informant role at the baseline wave
    h1 = ld.long[(ld.long["person_id"] == "H1-C") & (ld.long["role"] == SELF_CHILD) & (ld.long["outcome"] == "inst.total")]
    assert set(h1["baseline_score"]) == {31.0}
    h1p = ld.long[(ld.long["person_id"] == "H1-C") & (ld.long["role"] == PARENT) & (ld.long["outcome"] == "inst.sub")]
    assert set(h1p["baseline_score"]) == {10.5}
    assert ld.long["age_years"].min() == pytest.approx(10.0 + int(planned(BASE) / (365.25 / 12)) / 12)


def test_injected_conflicts_each_flagged_with_their_rule():
    b = clean_study()
    fw = W[1]
    lo, hi = STUDY.wave(fw).window_days
    # duplicate: H0 adult answers the follow-up twice, the second far from the planned day
    dup = b.add("H0", "H0-A", "H0-A", SELF_ADULT, fw, day=lo + 1, sex="male")
    # outside window
    late = b.add("H1", "H1-X", "H1-X", SELF_ADULT, fw, day=hi + 30)
    # sex disagrees: H2 adult says female at the last wave, male at the others -> male (most frequent)
    sexr = b.find("H2-A", "H2-A", W[-1])
    b.rows[sexr - 1]["subject_sex"] = "female"
    # birth year disagrees: H2 child's age at the last wave implies a birth 5 years earlier
    byr = b.find("H2-C", "H2-C", W[-1])
    b.rows[byr - 1]["subject_age_months"] += 60
    # parent report on a child of another household
    alien = b.add("H1", "H1-A", "H0-C", PARENT, BASE, day=planned(BASE) + 1, age_months=120)
    r, s = b.frames()
    ld = link_waves(r, s, None, STUDY)
    c = ld.conflicts
    assert set(c["rule"]) == {"duplicate_response", "outside_window", "sex_disagrees", "birth_year_disagrees",
                              "subject_not_in_household"}
    by_rule = {rule: set(g["response_id"]) for rule, g in c.groupby("rule")}
    assert by_rule["duplicate_response"] == {dup}
    assert by_rule["outside_window"] == {late}
    assert by_rule["sex_disagrees"] == {sexr}
    assert by_rule["birth_year_disagrees"] == {byr}
    assert by_rule["subject_not_in_household"] == {alien}
    assert c["resolution"].notna().all() and c["detail"].notna().all()
    resp = ld.responses.set_index("response_id")
    assert not resp.loc[dup, "included"] and resp.loc[dup, "exclusion_reason"] == "conflict"
    assert not resp.loc[late, "included"] and resp.loc[late, "exclusion_reason"] == "outside_window"
    assert resp.loc[alien, "exclusion_reason"] == "conflict"
    assert resp.loc[sexr, "included"] and resp.loc[sexr, "sex"] == "male"
    assert resp.loc[byr, "included"]
    # the kept duplicate is the one on the planned day; no analysed row of the dropped ones
    assert not ld.long["response_id"].isin([dup, late, alien]).any()
    assert ld.persons.set_index("person_id").loc["H2-A", "sex"] == "male"
    # structure is still exact
    assert dict(zip(ld.persons["person_id"], ld.persons["household_id"], strict=True)) == b.home


def test_rules_change_the_resolution():
    b = clean_study()
    fw = W[1]
    hi = STUDY.wave(fw).window_days[1]
    late = b.add("H1", "H1-X", "H1-X", SELF_ADULT, fw, day=hi + 30)
    early_dup = b.add("H0", "H0-A", "H0-A", SELF_ADULT, fw, day=planned(fw) - 50, sex="male")
    sexr = b.find("H2-A", "H2-A", W[-1])
    b.rows[sexr - 1]["subject_sex"] = "female"
    r, s = b.frames()
    rules = LinkageRules(outside_window="include", duplicate="earliest", sex="baseline")
    ld = link_waves(r, s, None, STUDY, rules=rules)
    resp = ld.responses.set_index("response_id")
    assert resp.loc[late, "included"]
    assert resp.loc[early_dup, "included"]  # earliest kept
    planned_one = r[(r.person_id == "H0-A") & (r.wave == fw) & (r.response_id != early_dup)]["response_id"].iloc[0]
    assert not resp.loc[planned_one, "included"]
    assert set(ld.conflicts.loc[ld.conflicts.rule == "outside_window", "excluded"]) == {False}
    assert resp.loc[sexr, "sex"] == "male"  # baseline value


def test_registration_and_household_conflicts():
    b = clean_study()
    # H0's child self-report at the last wave carries another registration date -> T0 = earliest
    rid = b.add("H0", "H0-C", "H0-C", SELF_CHILD, W[-1], reg="2023-01-05", day=planned(W[-1]))
    # a person listed under another household in one follow-up row -> baseline household kept
    moved = b.add("H1", "H1-A", "H1-A", SELF_ADULT, W[-1], day=planned(W[-1]) + 2, hh_in_row="H9", sex="male")
    r, s = b.frames()
    ld = link_waves(r, s, None, STUDY)
    rules = set(ld.conflicts["rule"])
    assert {"registration_date_disagrees", "household_disagrees", "duplicate_response"} <= rules
    resp = ld.responses.set_index("response_id")
    assert resp.loc[moved, "household_id"] == "H1"
    t0 = ld.households.set_index("household_id").loc["H0", "t0_date"]
    assert t0 == pd.Timestamp("2023-01-05")
    other = resp[(resp.household_id == "H0") & (resp.wave == BASE) & (resp.role == SELF_ADULT)].iloc[0]
    assert other["days_since_t0"] == planned(BASE) + 5
    flagged = set(ld.conflicts.loc[ld.conflicts.rule == "registration_date_disagrees", "response_id"])
    assert flagged == set(r.loc[(r.household_id == "H0") & (r.response_id != rid), "response_id"])


def test_wide_frame_has_one_row_per_subject_and_informant():
    b = clean_study()
    r, s = b.frames()
    ld = link_waves(r, s, None, STUDY)
    wide = wide_frame(ld.long, STUDY)
    assert len(wide) == 3 * 3  # 3 households x (adult self, parent on child, child self)
    for w in W:
        col = f"inst_total_{w}"
        got = wide.set_index(["person_id", "role"]).loc[("H2-C", SELF_CHILD), col]
        assert got == 32.0
    assert not any("." in c for c in wide.columns)


def test_snapshot_hash_is_order_and_dtype_independent():
    r, s = clean_study().frames()
    long = link_waves(r, s, None, STUDY).long
    h = snapshot_hash(long)
    shuffled = long.sample(frac=1, random_state=3)[list(reversed(long.columns))]
    assert snapshot_hash(shuffled) == h
    changed = long.copy()
    changed.loc[changed.index[5], "score"] += 1e-9
    assert snapshot_hash(changed) != h
    assert snapshot_hash(long.iloc[:-1]) != h
    assert len(h) == 64 and int(h, 16) >= 0


def test_bad_input_names_the_problem(tmp_path):
    r, s = clean_study().frames()
    with pytest.raises(ValueError, match="subject_sex"):
        link_waves(r.drop(columns=["subject_sex"]), s, None, STUDY)
    with pytest.raises(ValueError, match="not in the study's waves"):
        link_waves(r.assign(wave="T9"), s, None, STUDY)
    cfg = tmp_path / "analysis.yaml"
    cfg.write_text("linkage:\n  duplicate: newest\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_linkage_rules(cfg)
    cfg.write_text("linkage:\n  outside_window: include\n")
    assert load_linkage_rules(cfg).outside_window == "include"
    assert np.isclose(LinkageRules().birth_year_tolerance, 1)


def test_snapshot_hash_ignores_storage_dtypes_not_values():
    a = pd.DataFrame({"x": [1, 2, 3], "t": ["a", "b", None], "f": [0.5, np.nan, -0.0],
                      "d": pd.to_datetime(["2024-01-01", None, "2024-03-01"])})
    b = a.assign(x=a["x"].astype("Int64"), t=a["t"].astype("category"), f=a["f"].astype("Float64"))
    assert snapshot_hash(a) == snapshot_hash(b) == snapshot_hash(a.assign(x=a["x"].astype(float), f=[0.5, np.nan, 0.0]))
    assert snapshot_hash(a) != snapshot_hash(a.assign(t=["a", "b", "None"]))  # missing is not the text "None"
    assert snapshot_hash(a) != snapshot_hash(a.rename(columns={"x": "y"}))
    assert snapshot_hash(a) != snapshot_hash(a.assign(x=a["x"].astype(str)))  # numbers are not text


def test_household_context_columns_for_measures():
    from cohortflow.instruments.registry import load_instruments

    inst = load_instruments()
    ctx = next(c for c, i in inst.items() if i.construct_code == "legal_measures")
    scale = inst[ctx].scales[0].code
    other = next(c for c, i in inst.items() if i.construct_code not in ("legal_measures", "help_received"))
    b = clean_study()
    r, s = b.frames()
    s["instrument"] = other
    s["scale"] = s["scale"].map({"total": inst[other].scales[0].code, "sub": inst[other].scales[-1].code})
    adult = r[r["role"] == SELF_ADULT]
    reported = ((adult["household_id"] == "H1") & (adult["wave"] == W[1])).astype(float)
    s = pd.concat([s, pd.DataFrame({"response_id": adult["response_id"], "instrument": ctx, "scale": scale,
                                    "score": reported.to_numpy(), "above_cutoff": pd.NA})], ignore_index=True)
    long = link_waves(r, s, None, STUDY, inst).long
    col = f"hh_{ctx}_{scale}"
    on = (long["household_id"] == "H1") & (long["wave"] == W[1])
    assert set(long.loc[on, col]) == {1.0} and set(long.loc[~on, col]) == {0.0}
    assert set(long.loc[on, "role"]) == {SELF_ADULT, PARENT, SELF_CHILD}  # every informant's rows carry it
    wide = wide_frame(long, STUDY).set_index(["person_id", "role"])
    assert wide.loc[("H1-C", SELF_CHILD), f"{col}_{W[1]}"] == 1.0
    assert wide.loc[("H0-C", SELF_CHILD), f"{col}_{W[1]}"] == 0.0


def _reference_snapshot_hash(frame: pd.DataFrame) -> str:
    """The straightforward definition (every column to canonical float or text, sort all rows by all
    columns, hash): what `snapshot_hash` computes on codes without materialising text."""
    import hashlib

    missing = "\x00NA"
    cols = sorted(str(c) for c in frame.columns)
    f = frame.copy()
    f.columns = [str(c) for c in f.columns]
    canon, kinds = {}, {}
    for c in cols:
        s = f[c].reset_index(drop=True)
        if pd.api.types.is_datetime64_any_dtype(s):
            ns = pd.to_datetime(s).astype("datetime64[ns]")
            kinds[c], canon[c] = "d", pd.Series(np.where(ns.isna(), np.nan, ns.astype("int64").astype("float64")))
        elif pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            v = pd.to_numeric(s.astype("Float64") if str(s.dtype) == "boolean" else s).astype("Float64")
            arr = v.to_numpy(dtype="float64", na_value=np.nan)
            kinds[c], canon[c] = "f", pd.Series(np.where(arr == 0, 0.0, arr))
        else:
            t = s.astype(object)
            kinds[c], canon[c] = "s", t.where(t.notna(), missing).astype(str)
    c_frame = pd.DataFrame(canon, columns=cols).sort_values(cols, kind="mergesort", na_position="last",
                                                            ignore_index=True)
    h = hashlib.sha256(f"rows={len(c_frame)};cols={len(cols)}".encode())
    for c in cols:
        h.update(b"\x1e" + c.encode() + b"\x1f" + kinds[c].encode())
        if kinds[c] == "s":
            h.update("\x1f".join(c_frame[c].tolist()).encode())
        else:
            h.update(c_frame[c].to_numpy(dtype="float64").astype("<f8").tobytes())
    return h.hexdigest()


def test_snapshot_hash_equals_the_reference_definition_for_text_and_categoricals():
    """Codes-based hashing (categoricals, str, object with missing and mixed values, ties, NaN) gives the
    hash of the plain sort-everything definition, also in chunks (more rows than one chunk of text)."""
    rng = np.random.default_rng(4)
    n = 3000
    frame = pd.DataFrame({
        "id": rng.choice(["h" + str(i) for i in range(50)], n),
        "cat": pd.Categorical(rng.choice(["b", "a", "c"], n), categories=["c", "b", "a", "z"]),
        "obj": pd.Series(rng.choice(np.array(["x", None, "1", "y"], dtype=object), n), dtype=object),
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 5, n).astype(float)),
        "flag": pd.array(np.where(rng.random(n) < 0.2, None, rng.random(n) < 0.5), dtype="boolean"),
        "when": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 3, n), "D"),
    })
    expected = _reference_snapshot_hash(frame)
    assert snapshot_hash(frame) == expected
    as_text = frame.assign(cat=frame["cat"].astype(str), id=frame["id"].astype("category"))
    assert snapshot_hash(as_text) == expected
    big = pd.concat([frame] * 400, ignore_index=True)  # 1.2 M rows: more than one 1 M-row chunk
    assert snapshot_hash(big) == _reference_snapshot_hash(big)


def test_snapshot_hash_of_non_ascii_long_and_wide_texts_equals_the_reference():
    """Text hashed from a byte table of the distinct texts (multi-byte UTF-8, a text too long for the table,
    gathers split into several pieces within a chunk) gives the reference definition's hash."""
    rng = np.random.default_rng(9)
    n = 2000
    wide = "w" * 200  # 201 bytes per row in the table: ~330 k rows per gathered piece
    frame = pd.DataFrame({
        "name": rng.choice(np.array(["Ösel", "straße", "日本", "é", None, "plain"], dtype=object), n),
        "wide": rng.choice(np.array([wide, wide[:-1] + "x", None], dtype=object), n),
        "long": pd.Categorical(rng.choice(["a" * 300, "b", "ç" * 150], n)),  # >= 256 bytes: joined as text
        "v": rng.integers(0, 4, n).astype(float),
    })
    assert snapshot_hash(frame) == _reference_snapshot_hash(frame)
    big = pd.concat([frame] * 250, ignore_index=True)  # 500 k rows: two pieces of the wide column
    assert snapshot_hash(big) == _reference_snapshot_hash(big)
    assert snapshot_hash(big) != snapshot_hash(big.assign(name=big["name"].replace("日本", "日夲")))
