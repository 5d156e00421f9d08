"""Kaplan-Meier confidence limits (log, log-log), summary limits at landmarks and median / reverse-KM
median follow-up against R survival (tests/fixtures/r_reference/km_ci.R; R not needed here)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blina_study.analysis.survival import kaplan_meier, reverse_kaplan_meier

REF = Path(__file__).parent / "fixtures" / "r_reference"
DATA = pd.read_csv(REF / "survival_data.csv")
CURVES = pd.read_csv(REF / "km_ci_curves.csv", na_values=["NA"])
SUMMARY = pd.read_csv(REF / "km_ci_summary.csv", na_values=["NA"])
MEDIAN = pd.read_csv(REF / "km_median.csv", na_values=["NA"])
EXTRA = {
    "to_zero": ([1, 2, 2, 3, 5], [1, 1, 0, 1, 1]),
    "censor_first": ([1, 2, 3, 4], [0, 1, 1, 1]),
    "half_plateau": ([1, 2, 3, 4], [1, 1, 1, 1]),
    "not_reached": ([1, 2, 3, 4], [1, 0, 0, 0]),
}


def _data(case: str) -> tuple[list[float], list[int]]:
    if case in EXTRA:
        return EXTRA[case]
    d = DATA if case == "all" else DATA[DATA["group"] == case]
    return d["time"].tolist(), d["event"].tolist()


def _same(a: float, b: float) -> bool:
    """Equal to 1e-6, NaN (R's NA) only where R has NA."""
    if math.isnan(b):
        return math.isnan(a)
    return not math.isnan(a) and abs(a - b) <= 1e-6


@pytest.mark.parametrize("case,conf_type", sorted(set(map(tuple, CURVES[["case", "conf_type"]].to_numpy()))))
def test_km_curve_limits_equal_r(case: str, conf_type: str) -> None:
    ref = CURVES[(CURVES["case"] == case) & (CURVES["conf_type"] == conf_type)]
    km = kaplan_meier(*_data(case))
    assert np.allclose(km.time, ref["time"], atol=0, rtol=0)
    assert np.allclose(km.surv, ref["surv"], atol=1e-12)
    lo, hi = km.confidence_interval(conf_type)
    for a, b in zip(lo, ref["lower"], strict=True):
        assert _same(a, b), (case, conf_type, lo, ref["lower"].tolist())
    for a, b in zip(hi, ref["upper"], strict=True):
        assert _same(a, b), (case, conf_type, hi, ref["upper"].tolist())
    frame = km.to_frame(conf_type)
    assert [_same(a, b) for a, b in zip(frame["ci_low"], ref["lower"], strict=True)] == [True] * len(ref)


@pytest.mark.parametrize("case,conf_type", sorted(set(map(tuple, SUMMARY[["case", "conf_type"]].to_numpy()))))
def test_km_landmark_limits_equal_r_summary(case: str, conf_type: str) -> None:
    ref = SUMMARY[(SUMMARY["case"] == case) & (SUMMARY["conf_type"] == conf_type)]
    km = kaplan_meier(*_data(case))
    for t, s, lo, hi in ref[["time", "surv", "lower", "upper"]].itertuples(index=False):
        assert _same(km.survival_at(t)[0], s)
        got = km.survival_ci_at(t, conf_type)
        assert _same(got[0], lo) and _same(got[1], hi), (case, conf_type, t, got, lo, hi)


@pytest.mark.parametrize("case,kind", sorted(set(map(tuple, MEDIAN[["case", "kind"]].to_numpy()))))
def test_median_and_reverse_km_follow_up_equal_r(case: str, kind: str) -> None:
    ref = MEDIAN[(MEDIAN["case"] == case) & (MEDIAN["kind"] == kind)].iloc[0]
    t, e = _data(case)
    km = kaplan_meier(t, e) if kind == "event" else reverse_kaplan_meier(t, e)
    assert km.n == ref["n"] and km.n_events == ref["events"]
    m = km.median()
    assert _same(m.median, ref["median"]), (case, kind, m, ref.to_dict())
    assert _same(m.ci_low, ref["lcl"]), (case, kind, m, ref.to_dict())
    assert _same(m.ci_high, ref["ucl"]), (case, kind, m, ref.to_dict())


def test_reference_covers_the_edge_cases() -> None:
    """The fixture holds a 0.5 plateau (midpoint rule), a median not reached, a curve to 0 and a
    log-log limit at S = 1 (NA in R): the cases where a naive port differs."""
    half = MEDIAN[(MEDIAN["case"] == "half_plateau") & (MEDIAN["kind"] == "event")].iloc[0]
    assert half["median"] == 2.5
    assert MEDIAN["median"].isna().any()
    assert CURVES[(CURVES["case"] == "to_zero")]["lower"].isna().any()
    ll = SUMMARY[(SUMMARY["case"] == "censor_first") & (SUMMARY["conf_type"] == "log-log")]
    assert ll["lower"].isna().any()


def test_unknown_conf_type_is_refused() -> None:
    km = kaplan_meier([1, 2], [1, 0])
    with pytest.raises(ValueError, match="conf_type"):
        km.confidence_interval("plain")
