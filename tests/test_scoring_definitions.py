"""Every shipped definition scored on hand-worked cases from its published (or declared) scoring rules.

Expected numbers are worked by hand in the comments from the rules in the definition's sources
(shared/docs/research/instruments.md), never taken from the engine: missing items at and beyond the
prorating limit, reversed items, item value maps, and every cut-off and band edge.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import ScoringError, score_instrument

INSTRUMENTS = load_instruments()
NA = float("nan")


def score(code: str, responses: dict[int, dict[str, float]], context: dict[int, dict] | None = None) -> pd.DataFrame:
    """Score {response_id: {item: raw code}}; returns the scores indexed by (response_id, scale)."""
    inst = INSTRUMENTS[code]
    rows = []
    for rid, vals in responses.items():
        for item in inst.item_codes:
            rows.append((rid, item, vals.get(item, NA)))
    iv = pd.DataFrame(rows, columns=["response_id", "item", "value"])
    ctx = pd.DataFrame.from_dict(context, orient="index") if context else None
    out = score_instrument(inst, iv, ctx)
    return out.set_index(["response_id", "scale"], drop=False)


def val(frame: pd.DataFrame, rid: int, scale: str, col: str = "score"):
    v = frame.loc[(rid, scale), col]
    if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def items_all(code: str, value: float, **overrides: float) -> dict[str, float]:
    d = dict.fromkeys(INSTRUMENTS[code].item_codes, value)
    d.update({k.lstrip("i"): v for k, v in overrides.items()})
    return d


def n(k: int) -> str:
    return f"{k:02d}"


# --- CRIES-13: codes 0-3 score 0/1/3/5; total 0-65, cut-off >= 30 for child self-report ---------------


def test_cries13_value_map_subscales_and_cutoff_edge():
    base = items_all("cries13", 0)
    r30 = {**base, **{n(k): 3 for k in range(1, 7)}}  # six 'often' = 6 x 5 = 30
    r29 = {**base, **{n(k): 3 for k in range(1, 6)}, "06": 2, "07": 1}  # 25 + 3 + 1 = 29
    f = score("cries13", {1: items_all("cries13", 2), 2: r30, 3: r29}, {i: {"role": "child"} for i in (1, 2, 3)})
    # all 'sometimes' (code 2 -> 3 points): intrusion 4 x 3, avoidance 4 x 3, arousal 5 x 3, total 13 x 3
    assert [val(f, 1, s) for s in ("intrusion", "avoidance", "arousal", "total")] == [12, 12, 15, 39]
    assert val(f, 2, "total") == 30 and val(f, 2, "total", "above_cutoff") is True
    assert val(f, 3, "total") == 29 and val(f, 3, "total", "above_cutoff") is False


def test_cries13_cutoff_depends_on_informant():
    base = items_all("cries13", 0)
    r30 = {**base, **{n(k): 3 for k in range(1, 7)}}  # 30
    r31 = {**r30, "07": 1}  # 31
    ctx = {1: {"role": "child"}, 2: {"role": "parent"}, 3: {"role": "child"}, 4: {"role": "parent"}, 5: {"role": None}}
    f = score("cries13", {1: r30, 2: r30, 3: r31, 4: r31, 5: r31}, ctx)
    # child self-report >= 30, parent report >= 31; no known role: no cut-off applies
    assert [val(f, r, "total", "above_cutoff") for r in (1, 2, 3, 4, 5)] == [True, False, True, True, None]


def test_cries13_prorating_limit_and_role_condition():
    one_missing = items_all("cries13", 3, i01=NA)  # 12 x 5 = 60, prorated 60 x 13/12 = 65; intrusion 15 x 4/3 = 20
    two_missing = items_all("cries13", 3, i01=NA, i04=NA)  # total needs 12 of 13; intrusion needs 3 of 4
    f = score("cries13", {1: one_missing, 2: two_missing}, {1: {"role": "parent"}, 2: {"role": "child"}})
    assert val(f, 1, "total") == pytest.approx(65.0) and val(f, 1, "total", "prorated") is True
    assert val(f, 1, "intrusion") == pytest.approx(20.0)
    assert val(f, 1, "total", "n_answered") == 12 and val(f, 1, "total", "n_items") == 13
    assert val(f, 1, "total", "above_cutoff") is True  # parent report: >= 31
    assert val(f, 2, "total") is None and val(f, 2, "intrusion") is None
    assert val(f, 2, "avoidance") == 20  # avoidance items all answered: 4 x 5
    assert val(f, 2, "total", "above_cutoff") is None


# --- CRIES-8: total 0-40, cut-off >= 17 ----------------------------------------------------------------


def test_cries8_cutoff_edge_and_missing():
    base = items_all("cries8", 0)
    r17 = {**base, "01": 3, "02": 3, "03": 3, "04": 1, "05": 1}  # 5+5+5+1+1 = 17
    r16 = {**base, "01": 3, "02": 3, "03": 3, "04": 1}  # 16
    one = items_all("cries8", 1, i08=NA)  # 7 x 1 = 7 -> 7 x 8/7 = 8
    two = items_all("cries8", 1, i07=NA, i08=NA)
    f = score("cries8", {1: r17, 2: r16, 3: one, 4: two})
    assert (val(f, 1, "total"), val(f, 1, "total", "above_cutoff")) == (17, True)
    assert (val(f, 2, "total"), val(f, 2, "total", "above_cutoff")) == (16, False)
    assert val(f, 3, "total") == pytest.approx(8.0) and val(f, 3, "total", "prorated") is True
    assert val(f, 4, "total") is None


# --- CATS caregiver: 3-6 sum items 1-16, >= 16; 7-17 sum items 1-20, >= 21 -------------------------------


@pytest.mark.parametrize(("code", "k", "cut"), [("cats_caregiver_3_6", 16, 16), ("cats_caregiver_7_17", 20, 21)])
def test_cats_cutoff_edge_and_prorating(code: str, k: int, cut: int):
    base = items_all(code, 0)
    at = {**base, **{n(j): 1 for j in range(1, cut + 1)}} if cut <= k else None
    if at is None:  # 21 points from 20 items: one item 2, nineteen 1
        at = {**items_all(code, 1), "01": 2}
    below = {**base, **{n(j): 1 for j in range(1, cut)}}
    two_missing = {**items_all(code, 1), n(k): NA, n(k - 1): NA}  # (k-2) x k/(k-2) = k
    three_missing = {**two_missing, n(k - 2): NA}
    f = score(code, {1: at, 2: below, 3: two_missing, 4: three_missing, 5: items_all(code, 3)})
    assert (val(f, 1, "total"), val(f, 1, "total", "above_cutoff")) == (cut, True)
    assert (val(f, 2, "total"), val(f, 2, "total", "above_cutoff")) == (cut - 1, False)
    assert val(f, 3, "total") == pytest.approx(k) and val(f, 3, "total", "prorated") is True
    assert val(f, 4, "total") is None
    assert val(f, 5, "total") == 3 * k  # maximum 48 / 60


# --- PCL-5: 0-4, clusters B 1-5, C 6-7, D 8-14, E 15-20; >= 33; DSM-5 provisional rule -------------------


def test_pcl5_clusters_cutoff_and_prorating():
    base = items_all("pcl5", 0)
    # 20 items at 2 = 40; item 01 -> 0 (-2), items 02..06 -> 1 (-5): 33
    r33 = {**items_all("pcl5", 2), "01": 0, "02": 1, "03": 1, "04": 1, "05": 1, "06": 1}
    r32 = {**r33, "07": 1}
    # three missing, one each in B, D and E: total 17 x 2 = 34 -> 34 x 20/17 = 40;
    # B 4 of 5 -> 8 x 5/4 = 10; D 6 of 7 -> 12 x 7/6 = 14; E 5 of 6 -> 10 x 6/5 = 12; C complete = 4
    three = items_all("pcl5", 2, i05=NA, i14=NA, i20=NA)
    four = {**three, "07": NA}  # fourth missing item: total beyond its limit; C has 1 of 2
    f = score("pcl5", {1: items_all("pcl5", 2), 2: r33, 3: r32, 4: three, 5: four, 6: base})
    assert [val(f, 1, s) for s in ("b", "c", "d", "e", "total")] == [10, 4, 14, 12, 40]
    assert (val(f, 2, "total"), val(f, 2, "total", "above_cutoff")) == (33, True)
    assert (val(f, 3, "total"), val(f, 3, "total", "above_cutoff")) == (32, False)
    assert val(f, 4, "total") == pytest.approx(40.0) and val(f, 4, "total", "prorated") is True
    assert [val(f, 4, s) for s in ("b", "c", "d", "e")] == pytest.approx([10, 4, 14, 12])
    assert val(f, 5, "total") is None and val(f, 5, "c") is None
    assert val(f, 6, "total") == 0 and val(f, 6, "total", "above_cutoff") is False


def test_pcl5_provisional_diagnosis_rule():
    ones = items_all("pcl5", 1)  # rated 1 does not count as a symptom
    meets = {**ones, "01": 2, "06": 3, "08": 2, "09": 4, "15": 2, "16": 2}  # 1 B, 1 C, 2 D, 2 E
    short_e = {**meets, "16": 1}  # only 1 E
    missing = {**meets, "20": NA}
    f = score("pcl5", {1: meets, 2: short_e, 3: missing, 4: items_all("pcl5", 4)})
    assert val(f, 1, "provisional_ptsd", "band") == "positive"
    assert val(f, 1, "provisional_ptsd", "above_cutoff") is True
    assert [val(f, 1, f"{c}_symptoms") for c in "bcde"] == [1, 1, 2, 2]
    assert val(f, 2, "provisional_ptsd", "band") == "negative"
    assert val(f, 2, "provisional_ptsd", "above_cutoff") is False
    assert val(f, 3, "provisional_ptsd", "band") is None  # E count needs every E item
    assert val(f, 4, "provisional_ptsd", "band") == "positive"


# --- TSQ: 10 yes/no; >= 6 yes = positive screen; all items needed -----------------------------------------


def test_tsq_count_cutoff_edge_and_missing():
    six = {**items_all("tsq", 0), **{n(j): 1 for j in (1, 2, 3, 6, 7, 8)}}
    five = {**six, "08": 0}
    gap = {**six, "10": NA}
    f = score("tsq", {1: six, 2: five, 3: gap})
    assert (val(f, 1, "total"), val(f, 1, "total", "above_cutoff")) == (6, True)
    assert (val(f, 1, "reexperiencing"), val(f, 1, "arousal")) == (3, 3)
    assert (val(f, 2, "total"), val(f, 2, "total", "above_cutoff")) == (5, False)
    assert val(f, 3, "total") is None and val(f, 3, "reexperiencing") == 3


# --- SDQ bands: every edge of every UK 3-band, parent and self-report, via reversed items ---------------


def _sdq_items_for(inst_code: str, scale: str, target: int) -> dict[str, float]:
    """Raw codes giving `target` on a fully answered 5-item SDQ scale (reversed items coded 2 - points)."""
    inst = INSTRUMENTS[inst_code]
    sc = inst.scale(scale)
    out = {}
    left = target
    for code in sc.items or []:
        pts = min(2, left)
        left -= pts
        out[code] = 2 - pts if inst.item(code).reversed else pts
    assert left == 0
    return out


def _sdq_case(inst_code: str, parts: dict[str, int]) -> dict[str, float]:
    d: dict[str, float] = {}
    for scale in ("emotional", "conduct", "hyperactivity", "peer", "prosocial"):
        d.update(_sdq_items_for(inst_code, scale, parts.get(scale, 0)))
    return d


SDQ_EDGES = {
    # scale: [(score, band)] at every band edge, from the UK 3-band tables (parent [V], self-report [M])
    "sdq_parent": {
        "emotional": [(0, "normal"), (3, "normal"), (4, "borderline"), (5, "abnormal"), (10, "abnormal")],
        "conduct": [(0, "normal"), (2, "normal"), (3, "borderline"), (4, "abnormal"), (10, "abnormal")],
        "hyperactivity": [(0, "normal"), (5, "normal"), (6, "borderline"), (7, "abnormal"), (10, "abnormal")],
        "peer": [(0, "normal"), (2, "normal"), (3, "borderline"), (4, "abnormal"), (10, "abnormal")],
        "prosocial": [(10, "normal"), (6, "normal"), (5, "borderline"), (4, "abnormal"), (0, "abnormal")],
        "total": [(0, "normal"), (13, "normal"), (14, "borderline"), (16, "borderline"), (17, "abnormal"), (40, "abnormal")],
    },
    "sdq_self": {
        "emotional": [(0, "normal"), (5, "normal"), (6, "borderline"), (7, "abnormal"), (10, "abnormal")],
        "conduct": [(0, "normal"), (3, "normal"), (4, "borderline"), (5, "abnormal"), (10, "abnormal")],
        "hyperactivity": [(0, "normal"), (5, "normal"), (6, "borderline"), (7, "abnormal"), (10, "abnormal")],
        "peer": [(0, "normal"), (3, "normal"), (4, "borderline"), (5, "borderline"), (6, "abnormal"), (10, "abnormal")],
        "prosocial": [(10, "normal"), (6, "normal"), (5, "borderline"), (4, "abnormal"), (0, "abnormal")],
        "total": [(0, "normal"), (15, "normal"), (16, "borderline"), (19, "borderline"), (20, "abnormal"), (40, "abnormal")],
    },
}


@pytest.mark.parametrize("inst_code", ["sdq_parent", "sdq_self"])
def test_sdq_every_band_edge(inst_code: str):
    cases: dict[int, dict[str, float]] = {}
    expect: dict[int, tuple[str, int, str]] = {}
    rid = 0
    for scale, edges in SDQ_EDGES[inst_code].items():
        for target, band in edges:
            rid += 1
            if scale == "total":  # spread the total over the four problem scales, 10 at most each
                parts, left = {}, target
                for s in ("emotional", "conduct", "hyperactivity", "peer"):
                    parts[s] = min(10, left)
                    left -= parts[s]
            else:
                parts = {scale: target}
            cases[rid] = _sdq_case(inst_code, parts)
            expect[rid] = (scale, target, band)
    f = score(inst_code, cases)
    for rid, (scale, target, band) in expect.items():
        assert val(f, rid, scale) == target, (scale, target)
        assert val(f, rid, scale, "band") == band, (inst_code, scale, target)
    cut = 17 if inst_code == "sdq_parent" else 20
    tot = f.xs("total", level="scale")
    assert ((tot["score"] >= cut) == tot["above_cutoff"].astype(bool)).all()


def test_sdq_reversed_items_and_missing_rule():
    # conduct = tantrum(5), obeys(7, reversed), fights(12), lies(18), steals(22)
    all_zero = dict.fromkeys(INSTRUMENTS["sdq_parent"].item_codes, 0)
    f = score("sdq_parent", {1: all_zero, 2: {**all_zero, "05": NA, "12": NA}, 3: {**all_zero, "05": NA, "12": NA, "18": NA}})
    # all coded 0: reversed 7 -> 2 (conduct), 21 + 25 -> 4 (hyper), 11 + 14 -> 4 (peer)
    assert (val(f, 1, "conduct"), val(f, 1, "hyperactivity"), val(f, 1, "peer"), val(f, 1, "emotional")) == (2, 4, 4, 0)
    assert val(f, 1, "total") == 10 and val(f, 1, "internalising") == 4 and val(f, 1, "externalising") == 6
    # 3 of 5 conduct items answered (obeys 2, lies 0, steals 0): mean 2/3 x 5 = 3.33 -> floor(3.83) = 3
    assert val(f, 2, "conduct") == 3 and val(f, 2, "conduct", "prorated") is True
    assert val(f, 3, "conduct") is None and val(f, 3, "total") is None and val(f, 3, "externalising") is None
    assert val(f, 3, "internalising") == 4  # internalising does not use conduct


# --- Parental Stress Scale: 1-5, items 1,2,5,6,7,8,17,18 reversed; 18-90 -----------------------------------


def test_pss_reversal_and_prorating():
    fives = items_all("pss", 5)  # 10 plain items x 5 + 8 reversed x 1 = 58
    two_missing = items_all("pss", 5, i03=NA, i04=NA)  # 8 plain x 5 + 8 x 1 = 48 -> 48 x 18/16 = 54
    three_missing = {**two_missing, "09": NA}
    f = score("pss", {1: fives, 2: two_missing, 3: three_missing, 4: items_all("pss", 3)})
    assert val(f, 1, "total") == 58
    assert val(f, 2, "total") == pytest.approx(54.0) and val(f, 2, "total", "prorated") is True
    assert val(f, 3, "total") is None
    assert val(f, 4, "total") == 54  # midpoint 3 is its own reverse: 18 x 3


# --- CYRM-R: 17 items 1-5 summed; personal 10 items, caregiver 7 ------------------------------------------


def test_cyrm_r_sum_subscales_and_missing():
    f = score("cyrm_r", {1: items_all("cyrm_r", 5), 2: items_all("cyrm_r", 2, i01=NA, i05=NA), 3: items_all("cyrm_r", 2, i01=NA, i02=NA, i05=NA)})
    assert (val(f, 1, "total"), val(f, 1, "personal"), val(f, 1, "caregiver")) == (85, 50, 35)
    assert val(f, 2, "total") == pytest.approx(34.0)  # 15 x 2 = 30 -> 30 x 17/15 = 34
    assert val(f, 2, "personal") == pytest.approx(20.0)  # 9 x 2 = 18 -> 18 x 10/9 = 20
    assert val(f, 3, "total") is None and val(f, 3, "personal") is None  # 14 of 17; 8 of 10
    assert val(f, 3, "caregiver") == pytest.approx(14.0)  # 6 of 7 -> 12 x 7/6


# --- KIDSCREEN-10: 1-5, items 3 and 4 reversed, raw sum 10-50 ---------------------------------------------


def test_kidscreen10_reversal_and_missing():
    best = {**items_all("kidscreen10", 5), "03": 1, "04": 1}  # 8 x 5 + reversed 1 -> 5 twice = 50
    f = score("kidscreen10", {1: best, 2: items_all("kidscreen10", 3), 3: {**best, "10": NA}, 4: {**best, "10": NA, "09": NA}})
    assert val(f, 1, "total") == 50 and val(f, 2, "total") == 30
    assert val(f, 3, "total") == pytest.approx(50.0) and val(f, 3, "total", "prorated") is True  # 45 x 10/9
    assert val(f, 4, "total") is None


# --- Cantril: thriving now >= 7 and future >= 8; suffering both <= 4; else struggling ---------------------


def test_cantril_classification_edges():
    cases = {
        1: (7, 8, "thriving"), 2: (6, 8, "struggling"), 3: (7, 7, "struggling"), 4: (4, 4, "suffering"),
        5: (5, 4, "struggling"), 6: (4, 5, "struggling"), 7: (10, 10, "thriving"), 8: (0, 0, "suffering"),
        9: (4, 9, "struggling"), 10: (8, NA, None),
    }
    f = score("cantril", {k: {"now": a, "future": b} for k, (a, b, _) in cases.items()})
    for k, (_a, _b, cat) in cases.items():
        assert val(f, k, "wellbeing", "band") == cat, k
    assert val(f, 10, "now") == 8 and val(f, 10, "future") is None
    with pytest.raises(ScoringError, match="cantril.*now.*11"):
        score("cantril", {1: {"now": 11, "future": 3}})


# --- AUDIT: items 9-10 scored 0/2/4; >= 8 hazardous; WHO zones; AUDIT-C >= 4 men, >= 3 women -------------


def test_audit_value_map_zones_and_sex_specific_cutoff():
    base = items_all("audit", 0)
    def with_total(t: int) -> dict[str, float]:
        d = dict(base)
        left = t
        for k in range(1, 9):
            d[n(k)] = min(4, left)
            left -= d[n(k)]
        assert left == 0
        return d
    edges = {0: "zone1", 7: "zone1", 8: "zone2", 15: "zone2", 16: "zone3", 19: "zone3", 20: "zone4", 32: "zone4"}
    cases = {t: with_total(t) for t in edges}
    cases[40] = {**items_all("audit", 4), "09": 2, "10": 2}  # 8 x 4 + 4 + 4
    cases[4] = {**base, "09": 1, "10": 1}  # yes, not in the last year: 2 + 2
    f = score("audit", cases)
    for t, zone in edges.items():
        assert (val(f, t, "total"), val(f, t, "total", "band")) == (t, zone)
        assert val(f, t, "total", "above_cutoff") is (t >= 8)
    assert (val(f, 40, "total"), val(f, 40, "total", "band")) == (40, "zone4")
    assert val(f, 4, "total") == 4
    c3 = {**base, "01": 2, "02": 1}
    c4 = {**base, "01": 2, "02": 2}
    ctx = {1: {"subject_sex": "male"}, 2: {"subject_sex": "female"}, 3: {"subject_sex": "male"}, 4: {"subject_sex": None}}
    g = score("audit", {1: c3, 2: c3, 3: c4, 4: c4}, ctx)
    assert [val(g, r, "audit_c", "above_cutoff") for r in (1, 2, 3, 4)] == [False, True, True, None]
    h = score("audit_c", {1: {"01": 2, "02": 1, "03": 0}, 2: {"01": 2, "02": 1, "03": 0}}, {1: {"subject_sex": "male"}, 2: {"subject_sex": "female"}})
    assert (val(h, 1, "total"), val(h, 1, "total", "above_cutoff"), val(h, 2, "total", "above_cutoff")) == (3, False, True)


# --- Study-specific blocks ---------------------------------------------------------------------------------


def test_violence_any_and_frequency():
    f = score("violence", {
        1: {"partner_any": 1, "partner_freq": 3, "child_any": NA, "child_freq": 0},  # 3-5 times -> midpoint 4
        2: {"partner_any": 0, "partner_freq": 0, "child_any": NA, "child_freq": NA},
        3: {"partner_any": 0, "partner_freq": 0, "child_any": 0, "child_freq": 6},  # > 20 -> 25
    })
    assert (val(f, 1, "any"), val(f, 1, "partner_freq"), val(f, 1, "total_freq")) == (1, 4, 4)
    assert val(f, 2, "any") is None  # one 'no' and one missing: not known to be 'no'
    assert val(f, 2, "partner_any") == 0 and val(f, 2, "total_freq") is None
    assert (val(f, 3, "any"), val(f, 3, "child_freq")) == (0, 25)


def test_safety_help_satisfaction_trust_measures():
    s = score("safety", {1: {"home": 4, "family": 6}, 2: {"home": 5}})
    assert (val(s, 1, "home", "above_cutoff"), val(s, 2, "home", "above_cutoff")) == (True, False)  # < 5 = unsafe
    assert val(s, 1, "mean") == 5 and val(s, 2, "mean") == 5
    help_codes = INSTRUMENTS["help"].item_codes
    h = score("help", {1: dict.fromkeys(help_codes, 0), 2: {**dict.fromkeys(help_codes, 0), "police": 1, "shelter": 1},
                       3: {**dict.fromkeys(help_codes, 0), "other": NA}})
    assert (val(h, 1, "any"), val(h, 1, "n_types")) == (0, 0)
    assert (val(h, 2, "any"), val(h, 2, "n_types")) == (1, 2)
    assert val(h, 3, "any") is None and val(h, 3, "n_types") == 0
    sat = score("satisfaction", {1: {"overall": 5}, 2: {"overall": 6}})
    assert (val(sat, 1, "overall", "above_cutoff"), val(sat, 2, "overall", "above_cutoff")) == (True, False)
    t = score("trust", {1: {"veilig_thuis": 4, "youth_protection": 4, "acts_in_interest": 4, "distrust": 2},
                        2: {"veilig_thuis": 5, "youth_protection": 1, "distrust": 5},
                        3: {"veilig_thuis": 5, "distrust": 5}})
    assert val(t, 1, "mean") == 4  # distrust 2 reversed on 1-5 -> 4
    assert val(t, 2, "mean") == pytest.approx((5 + 1 + 1) / 3)
    assert val(t, 3, "mean") is None
    m = score("measures", {1: {"ots": 1, "ots_start": 19500, "thv": 0, "placement": 0}, 2: {"ots": 0, "thv": 0}})
    assert (val(m, 1, "any"), val(m, 1, "n_measures"), val(m, 1, "ots")) == (1, 1, 1)
    assert val(m, 2, "any") is None and val(m, 2, "placement") is None


def test_every_shipped_definition_scores_a_full_response_within_range():
    """A response with every item at its highest code scores every scale, none out of its declared range."""
    for code, inst in INSTRUMENTS.items():
        top = {}
        for it in inst.items:
            rs = inst.response_scale_of(it)
            top[it.code] = max(rs.codes) if rs.options else rs.numeric[1]
        f = score(code, {1: top})
        assert f["instrument_version"].astype(str).eq(inst.version).all()
        for sc in inst.scales:
            v = val(f, 1, sc.code)
            assert v is not None and np.isfinite(v), (code, sc.code)
