"""Site statistics: JSON form, disclosure flags, input errors, edge cases of the pooling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from blina_study.analysis.federated import (
    COORDINATOR_ONLY,
    FORMAT_VERSION,
    PUBLISHABLE,
    FederatedInputError,
    FederatedParams,
    PoolingError,
    pool_cox,
    pool_km,
    pool_site_statistics,
    scan_statistics,
    site_statistics,
)
from blina_study.analysis.federated.simulate import simulate_site
from blina_study.analysis.federated.sufficient import cox_pattern_counts


@pytest.fixture()
def site():
    return simulate_site(np.random.default_rng(11), "X", 40)


def test_statistics_are_plain_json_and_flagged(site):
    course, patient = site
    st = site_statistics(course, patient, site_id="X")
    text = json.dumps(st, allow_nan=False)  # raises on NaN / numpy / DataFrame content
    assert json.loads(text) == st
    assert st["format"] == FORMAT_VERSION and st["site_id"] == "X"
    kinds = {}
    for name, s in st["statistics"].items():
        assert s["disclosure"] in (COORDINATOR_ONLY, PUBLISHABLE), name
        kinds.setdefault(s["kind"], set()).add(s["disclosure"])
    # Pooling inputs with per-time or per-patient-level granularity never count as publishable.
    for kind in ("km_table", "cox_pattern_counts", "paired_difference_histogram",
                 "value_histogram", "table2x2"):  # fmt: skip
        assert kinds[kind] == {COORDINATOR_ONLY}, kind
    assert kinds["count_table"] == {PUBLISHABLE}
    # No source identifier, date or person-level field leaks into the statistics.
    for mrn in patient["person_source_value"]:
        assert mrn not in text
    assert scan_statistics(st, source_ids=patient["person_source_value"]) == []
    planted = json.loads(text)
    planted["statistics"]["km/efs/all"]["index_date"] = str(patient["index_date"].iloc[0])
    found = {f.problem for f in scan_statistics(planted)}
    assert "person-level field name 'index_date'" in found
    assert any(p.startswith("date-like text") for p in found)


def test_statistics_do_not_depend_on_row_order_or_source_ids(site):
    course, patient = site
    ref = site_statistics(course, patient, site_id="X")
    shuffled = site_statistics(
        course.sample(frac=1, random_state=3).drop(columns="person_source_value"),
        patient.sample(frac=1, random_state=4).drop(columns="person_source_value"),
        site_id="X",
    )
    # Cox patterns are numbered in first-seen order; compare them as a mapping.
    for st in (ref, shuffled):
        cox = st["statistics"].pop("cox/efs")
        st["cox_map"] = {
            tuple(p): [(t, r[i], e[i]) for t, r, e in
                       zip(cox["event_times"], cox["at_risk"], cox["events"], strict=True)]
            for i, p in enumerate(cox["patterns"])
        }  # fmt: skip
    assert ref == shuffled


def test_missing_column_names_the_table_and_column(site):
    course, patient = site
    with pytest.raises(FederatedInputError, match=r"patient table lacks column\(s\) \['efs_days'\]"):
        site_statistics(course, patient.drop(columns="efs_days"), site_id="X")


def test_bad_boolean_names_the_row(site):
    course, patient = site
    patient = patient.copy()
    patient["bcr_abl1"] = patient["bcr_abl1"].astype(object)
    patient.loc[3, "bcr_abl1"] = "maybe"
    pid = patient.loc[3, "person_id"]
    with pytest.raises(FederatedInputError, match=rf"person_id={pid}.*'bcr_abl1'.*'maybe'"):
        site_statistics(course, patient, site_id="X")


@pytest.mark.parametrize("value", [-1, 2.5, None])
def test_bad_survival_time_is_reported(site, value):
    course, patient = site
    patient = patient.copy()
    patient["os_days"] = patient["os_days"].astype(object)
    patient.loc[0, "os_days"] = value
    with pytest.raises(FederatedInputError, match=r"os_days.*non-negative whole number"):
        site_statistics(course, patient, site_id="X")


def test_rows_of_another_site_and_duplicates_are_refused(site):
    course, patient = site
    with pytest.raises(FederatedInputError, match=r"site\(s\) \['X'\] besides 'Y'"):
        site_statistics(course, patient, site_id="Y")
    with pytest.raises(FederatedInputError, match="duplicate key"):
        site_statistics(pd.concat([course, course.iloc[:1]]), patient, site_id="X")
    with pytest.raises(FederatedInputError, match="no patient row"):
        site_statistics(course, patient.iloc[1:], site_id="X")


def test_params_round_trip_and_unknown_names():
    p = FederatedParams(landmark_days=(365, 730), lab_decimals=1)
    assert FederatedParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(FederatedInputError, match="unknown federated parameter"):
        FederatedParams.from_dict({"landmark_day": [365]})


def _two_sites(**kw):
    rng = np.random.default_rng(5)
    (c1, p1), (c2, p2) = simulate_site(rng, "A", 30), simulate_site(rng, "B", 25, **kw)
    return site_statistics(c1, p1, site_id="A"), (c2, p2)


def test_pooling_refuses_mismatched_sites():
    a, (c2, p2) = _two_sites()
    b = site_statistics(c2, p2, site_id="B", params=FederatedParams(lab_decimals=1))
    with pytest.raises(PoolingError, match=r"different parameters.*lab_decimals"):
        pool_site_statistics([a, b])
    with pytest.raises(PoolingError, match="not unique"):
        pool_site_statistics([a, a])
    bad = dict(a, format="blina-federated-stats/0", site_id="Z")
    with pytest.raises(PoolingError, match="format"):
        pool_site_statistics([a, bad])


def test_site_without_events_pools_and_is_flagged():
    a, (c2, p2) = _two_sites(event_scale=0.0)
    b = site_statistics(c2, p2, site_id="B")
    res = pool_site_statistics([a, b])
    json.dumps(res, allow_nan=False)
    site_b = res["per_site"]["B"]
    assert site_b["survival"]["efs"]["all"]["n_events"] == 0
    assert set(site_b["survival"]["efs"]["all"]["survival"]) == {1.0}
    assert site_b["cox"]["efs"]["warning"] == "no model: no events"
    assert site_b["survival"]["efs"]["logrank"]["p"] is None
    # The zero-event site still adds its patients to the pooled risk sets.
    assert res["pooled"]["survival"]["efs"]["all"]["n"] == (
        res["per_site"]["A"]["survival"]["efs"]["all"]["n"] + len(p2)
    )


def test_cox_without_variation_or_with_separation_does_not_crash():
    t = [5, 8, 8, 12, 20, 30, 31, 40]
    e = [True, True, False, True, True, False, True, True]
    flat = cox_pattern_counts(t, e, [[1.0, 0.0]] * 4 + [[1.0, 1.0]] * 4)
    res = pool_cox([dict(flat, covariates=["a", "b"])])
    # As the centralized cox_ph: a constant covariate is dropped with its reason.
    assert res["coef"][0] is None and res["dropped"] == [["a", "constant (all = 1)"]]
    # Every event has b = 1 and nobody with b = 0 fails: the likelihood increases forever; R's
    # finite coefficient with its warning, as the centralized fit gives it.
    sep = cox_pattern_counts(t, e, [[float(x)] for x in e])
    res = pool_cox([dict(sep, covariates=["b"])])
    assert "coefficient may be infinite" in res["warning"] and "monotone likelihood" in res["warning"]
    assert res["infinite"] == ["b.ci_upper"] and res["ci_upper"] == [None]
    json.dumps(res, allow_nan=False)


def test_km_when_everyone_fails_at_the_last_time():
    res = pool_km([{"time": [1, 2, 3], "events": [1, 0, 2], "censored": [0, 1, 0]}])
    kmf = KaplanMeierFitter().fit([1, 2, 3, 3], [1, 0, 1, 1])
    assert res["survival"] == pytest.approx(kmf.survival_function_.iloc[1:, 0].tolist())
    ci = kmf.confidence_interval_.iloc[1:]
    assert res["ci_lower"] == pytest.approx(ci.iloc[:, 0].tolist(), abs=1e-12)
    assert res["ci_upper"] == pytest.approx(ci.iloc[:, 1].tolist(), abs=1e-12)
    assert res["se"][-1] == 0.0
    assert res["median_days"] == 3
