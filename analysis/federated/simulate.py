"""Synthetic ``course`` / ``patient`` tables of one center, for tests, demos and benchmarks.

Plausible, not realistic: statuses, binary covariates with NULLs, integer-day survival with
ties (events land on weekly visits, non-responders fail at day 0), T-cell counts at the
reporting precision (2 decimals, 10^9/L) and cytokine peaks (pg/mL). Columns are those of
study-protocol section 4 (lineage omitted), dates included, so tests can check that no date or
source id reaches a results package.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

__all__ = ["simulate_site"]


def simulate_site(
    rng: np.random.Generator, site_id: str, n_patients: int, *, event_scale: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(course, patient)`` for ``n_patients`` patients of ``site_id``.

    ``event_scale`` multiplies the baseline hazard (0 gives a site without any event).
    """
    n = n_patients
    pid = np.arange(1, n + 1) * 10 + rng.integers(0, 10, n)  # unordered, site-local ids
    referral = rng.choice(["R/R", "CR-MRDpos", "CR-MRDneg", "unknown"], n, p=[0.3, 0.3, 0.37, 0.03])
    poor = rng.random(n) < 0.2
    bcr = rng.random(n) < 0.12
    high_mrd1 = np.where(referral == "CR-MRDneg", False, rng.random(n) < 0.5)
    burden = (referral == "R/R") & (rng.random(n) < 0.7)
    sex = rng.choice(["F", "M", "unknown"], n, p=[0.47, 0.5, 0.03])
    age = np.round(rng.uniform(0.5, 18.0, n), 2)

    lin = 0.9 * high_mrd1 + 0.6 * bcr + 0.8 * poor + 0.5 * (referral == "R/R")
    hazard = 0.0004 * event_scale * np.exp(lin)
    with np.errstate(divide="ignore"):
        t_event = np.where(hazard > 0, rng.exponential(1 / np.maximum(hazard, 1e-300)), np.inf)
    t_cens = rng.uniform(120, 1600, n)
    non_resp = (referral == "R/R") & (rng.random(n) < 0.15 * min(event_scale, 1.0))
    efs_event = non_resp | (t_event <= t_cens)
    efs_days = np.where(non_resp, 0, np.ceil(np.minimum(t_event, t_cens) / 7) * 7).astype(int)
    efs_days = np.where(efs_event | (efs_days == 0), efs_days, np.floor(t_cens).astype(int))
    death_t = np.where(efs_event, efs_days + rng.exponential(500, n), np.inf)
    os_event = efs_event & (death_t <= t_cens)
    os_days = np.where(os_event, np.ceil(death_t), np.floor(t_cens)).astype(int)
    os_days = np.maximum(os_days, efs_days)

    index = [date(2018, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 1800, n)]
    patient = pd.DataFrame({
        "site_id": site_id,
        "person_id": pid.astype("int64"),
        "person_source_value": [f"MRN{site_id}{p}" for p in pid],
        "sex": sex,
        "age_at_index_years": age,
        "index_date": index,
        "n_courses": rng.integers(1, 5, n),
        "indication": np.where(referral == "R/R", "R/R",
                               np.where(referral == "CR-MRDpos", "CR-MRDpos", "chemo_delay")),
        "status_at_referral": referral,
        "burden_reduction": burden,
        "poor_cytogenetics": poor,
        "bcr_abl1": bcr,
        "next_therapy": rng.choice(["HSCT", "CAR-T", "protocol", "none"], n, p=[.4, .1, .4, .1]),
        "efs_event": efs_event,
        "efs_event_type": np.where(non_resp, "non_response", np.where(efs_event, "relapse", None)),
        "efs_days": efs_days,
        "os_event": os_event,
        "os_days": os_days,
    })  # fmt: skip
    patient["last_followup"] = [i + timedelta(days=int(d)) for i, d in zip(index, os_days,
                                                                           strict=True)]

    rows = []
    for i in range(n):
        start = index[i]
        for k in range(1, int(patient.at[i, "n_courses"]) + 1):
            if k == 1:
                pre = referral[i] if not burden[i] else rng.choice(["R/R", "CR-MRDpos",
                                                                   "CR-MRDneg"])
            else:
                pre = rng.choice(["CR-MRDpos", "CR-MRDneg", "R/R", "unknown"],
                                 p=[0.3, 0.6, 0.05, 0.05])  # fmt: skip
            assessed = rng.random() < 0.93
            p_cr = 0.82 - 0.35 * poor[i] - 0.3 * bcr[i]
            cr = bool(rng.random() < p_cr) if pre in ("R/R", "CR-MRDpos") and assessed else None
            maint = bool(rng.random() < 0.97) if pre == "CR-MRDneg" and assessed else None
            hm = bool(high_mrd1[i]) if k == 1 else bool(rng.random() < 0.3)
            days = int(rng.integers(20, 29))
            pre_mrd = None if pre == "R/R" else float(rng.choice([0.0, 1e-4, 5e-4, 2e-3]))
            post = ("NE" if not assessed else
                    "CR-MRDneg" if (cr or maint) else "CR-MRDpos" if pre != "R/R" else "R/R")
            rec = {
                "site_id": site_id, "person_id": int(pid[i]),
                "person_source_value": patient.at[i, "person_source_value"],
                "course_number": k, "course_start": start,
                "course_end": start + timedelta(days=days - 1), "infusion_days": days,
                "pre_status": pre, "pre_mrd": pre_mrd,
                "pre_blasts_pct": round(float(rng.uniform(5, 60)), 1) if pre == "R/R" else 1.0,
                "post_status": post, "post_mrd": 0.0 if post == "CR-MRDneg" else None,
                "cr": cr, "mrd_maintained": maint,
                "high_mrd": None if pre == "CR-MRDneg" and rng.random() < 0.1 else hm,
                "cd19_loss": None if rng.random() < 0.15 else bool(rng.random() < 0.2),
                "crs_max_grade": None, "icans_max_grade": None,
            }  # fmt: skip
            for m, mu in (("cd3", 0.0), ("cd4", -1.0), ("cd8", -0.9)):
                pre_v = round(float(rng.lognormal(mu, 0.8)), 2)
                post_v = round(max(0.01, pre_v * float(rng.lognormal(0.15, 0.5))), 2)
                rec[f"{m}_pre"] = None if rng.random() < 0.08 else pre_v
                rec[f"{m}_post"] = None if rng.random() < 0.08 else post_v
            for c, mu in (("il6", 3.0), ("il10", 3.5), ("ifng", 2.5), ("tnfa", 1.5)):
                rec[f"{c}_peak"] = None if rng.random() < 0.1 else round(
                    float(rng.lognormal(mu + (0.4 if cr is False else 0.0), 1.0)), 2)  # fmt: skip
            rows.append(rec)
            start = start + timedelta(days=days + int(rng.integers(14, 60)))
    course = pd.DataFrame(rows)
    for col in ("cr", "mrd_maintained", "high_mrd", "cd19_loss"):
        course[col] = course[col].astype("boolean")
    return course, patient
