"""Reference implementation of the protocol's derivation rules in plain Python (the test oracle).

Input: one :class:`~blina_study.adapter.synth.timeline.PatientTimeline` (values already in canonical units via
``Measurement.canonical``) and the study :class:`~blina_study.adapter.study.Params`. Output: the patient's rows
of the ``course`` and ``patient`` contract tables (protocol section 4), as dicts keyed by column,
with ``None`` for NULL, :class:`datetime.date` for dates and Python bool/int/float otherwise.

This is a second, independent implementation of section 3 + 3b that the SQL views are tested
against, so it follows the protocol text literally. Where the text leaves a choice, the reading
taken is stated in the docstring of the function that makes it (look for "Reading:"). The synthetic
generator avoids data on which the readings noted as "not generated" would matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from blina_study.adapter.study import Params
from blina_study.adapter.synth.timeline import Measurement, PatientTimeline

__all__ = [
    "COURSE_COLUMNS",
    "PATIENT_COLUMNS",
    "Course",
    "MrdResult",
    "Status",
    "derive",
    "find_courses",
    "status_at",
]

COURSE_COLUMNS: tuple[str, ...] = (
    "site_id", "person_id", "person_source_value", "course_number", "course_start", "course_end",
    "infusion_days", "pre_status", "pre_mrd", "pre_blasts_pct", "post_status", "post_mrd", "cr",
    "mrd_maintained", "high_mrd", "cd19_loss", "cd3_pre", "cd3_post", "cd4_pre", "cd4_post",
    "cd8_pre", "cd8_post", "il6_peak", "il10_peak", "ifng_peak", "tnfa_peak", "crs_max_grade",
    "icans_max_grade",
)
PATIENT_COLUMNS: tuple[str, ...] = (
    "site_id", "person_id", "person_source_value", "sex", "age_at_index_years", "index_date",
    "n_courses", "indication", "status_at_referral", "burden_reduction", "poor_cytogenetics",
    "bcr_abl1", "next_therapy", "last_followup", "efs_event", "efs_event_type", "efs_days",
    "os_event", "os_days",
)

RR, MRDPOS, MRDNEG, UNKNOWN, NE = "R/R", "CR-MRDpos", "CR-MRDneg", "unknown", "NE"
_CR = (MRDPOS, MRDNEG)


@dataclass(frozen=True)
class Course:
    """Rule 1: one course. ``start``/``end`` = first/last infusion day; ``infusion_days`` = the
    number of calendar dates touched by any administration period of the course (3b.2)."""

    number: int
    start: date
    end: date
    infusion_days: int


@dataclass(frozen=True)
class MrdResult:
    """One MRD result as rule 2 reads it: ``value`` is the fraction (a ``< x`` result keeps x, "not
    detected" is 0 with comparator ``<``)."""

    day: date
    value: float
    comparator: str | None


@dataclass(frozen=True)
class Status:
    """Rule 2 at one time: the status and the blast/MRD results it used (None = none in window)."""

    status: str
    blasts: float | None
    blasts_day: date | None
    mrd: MrdResult | None


def _days(n: int) -> timedelta:
    return timedelta(days=n)


def find_courses(tl: PatientTimeline, gap_days: int) -> list[Course]:
    """Rule 1 + 3b.2. Administrations ordered by (start, end); a new course starts when the start of
    the next administration minus the latest end so far exceeds ``gap_days`` (gap 7 continues,
    gap 8 starts a new course at the default)."""
    admins = sorted((a for a in tl.administrations if a.kind == "blinatumomab"), key=lambda a: (a.start, a.end))
    groups: list[list] = []
    latest_end: date | None = None
    for a in admins:
        if latest_end is None or (a.start - latest_end).days > gap_days:
            groups.append([a])
            latest_end = a.end
        else:
            groups[-1].append(a)
            latest_end = max(latest_end, a.end)
    courses = []
    for i, g in enumerate(groups, start=1):
        days: set[date] = set()
        for a in g:
            d = a.start
            while d <= a.end:
                days.add(d)
                d += _days(1)
        courses.append(Course(i, min(a.start for a in g), max(a.end for a in g), len(days)))
    return courses


def _mrd_of(m: Measurement) -> MrdResult | None:
    """A measurement as an MRD result; a coded "not detected" is 0 with ``<`` (protocol section 2).
    A coded "detected" without a number cannot be placed on the scale (None, not generated)."""
    if m.canonical is not None:
        return MrdResult(m.day, m.canonical, m.comparator)
    if m.detected is False:
        return MrdResult(m.day, 0.0, "<")
    return None


def _latest_blasts(ms: list[Measurement], lo: date, hi: date) -> tuple[float | None, date | None]:
    """Latest marrow-blast result dated in [lo, hi]. Reading: several results on that same date ->
    the highest value (the worst; docs/omop-conventions.md)."""
    vals = [(m.day, m.canonical) for m in ms
            if m.variable == "marrow_blasts" and lo <= m.day <= hi and m.canonical is not None]
    if not vals:
        return None, None
    last = max(d for d, _ in vals)
    return max(v for d, v in vals if d == last), last


def _latest_mrd(ms: list[Measurement], lo: date, hi: date) -> MrdResult | None:
    """Latest MRD result dated in [lo, hi]. Reading: several on that same date -> the highest
    number; at an equal number a plain value beats a ``< x`` (the worse reading)."""
    res = [r for m in ms if m.variable == "mrd" and lo <= m.day <= hi and (r := _mrd_of(m)) is not None]
    if not res:
        return None
    last = max(r.day for r in res)
    return max((r for r in res if r.day == last), key=lambda r: (r.value, r.comparator is None))


def _mrd_positive(r: MrdResult, threshold: float) -> bool:
    """MRD >= threshold: a plain (or ``=``, ``>=``, ``>``) value at or above it."""
    return r.comparator in (None, "=", ">", ">=") and r.value >= threshold


def _mrd_negative(r: MrdResult, threshold: float) -> bool:
    """MRD < threshold: a plain value below it, ``< x`` with x <= threshold, ``<= x`` with x < it.
    Reading: ``< x`` with x above the threshold is neither (status ``unknown``; not generated)."""
    if r.comparator in (None, "="):
        return r.value < threshold
    if r.comparator == "<":
        return r.value <= threshold
    if r.comparator == "<=":
        return r.value < threshold
    return False


def _classify(blasts: float | None, blasts_day: date | None, mrd: MrdResult | None,
              relapse_days: list[date], p: Params) -> str:
    if blasts is not None and blasts >= p.blast_cr_threshold_pct:
        return RR
    if blasts is None and mrd is not None and _mrd_positive(mrd, p.blast_cr_threshold_pct / 100.0):
        return RR
    # Reading: a relapse record in the window counts when it is dated strictly after the latest
    # blast result (which is < 5 % here), or when there is no blast result in the window.
    if any(blasts_day is None or d > blasts_day for d in relapse_days):
        return RR
    if mrd is not None and _mrd_positive(mrd, p.mrd_positive_threshold):
        return MRDPOS
    if mrd is not None and _mrd_negative(mrd, p.mrd_positive_threshold):
        return MRDNEG
    return UNKNOWN


def status_at(tl: PatientTimeline, t: date, p: Params) -> Status:
    """Rule 2: disease status at date ``t`` from the latest blast and the latest MRD result, each
    dated in [t - status_lookback_days, t] (both ends included, 3b.1), and relapse records dated in
    that window."""
    lo = t - _days(p.status_lookback_days)
    blasts, bday = _latest_blasts(tl.measurements, lo, t)
    mrd = _latest_mrd(tl.measurements, lo, t)
    relapses = [c.day for c in tl.conditions if c.kind == "relapse" and lo <= c.day <= t]
    return Status(_classify(blasts, bday, mrd, relapses, p), blasts, bday, mrd)


def _status_of_day(tl: PatientTimeline, d: date, p: Params) -> Status:
    """Rule 7: the status from the blast/MRD results of date ``d`` alone. Reading: relapse records
    are not results and are not read here."""
    blasts, bday = _latest_blasts(tl.measurements, d, d)
    mrd = _latest_mrd(tl.measurements, d, d)
    return Status(_classify(blasts, bday, mrd, [], p), blasts, bday, mrd)


def _response_date(tl: PatientTimeline, c: Course, p: Params) -> date | None:
    """Rule 7: first date in [start + response_from_day, end + response_until_days] with a
    marrow-blast or MRD result."""
    lo, hi = c.start + _days(p.response_from_day), c.end + _days(p.response_until_days)
    days = [m.day for m in tl.measurements
            if m.variable in ("marrow_blasts", "mrd") and lo <= m.day <= hi
            and (m.canonical is not None or (m.variable == "mrd" and _mrd_of(m) is not None))]
    return min(days) if days else None


def _stored_mrd(r: MrdResult | None) -> float | None:
    """3b.4: ``< x`` stored as x, "not detected" as 0, none as NULL."""
    return None if r is None else r.value


def _high_mrd(pre: Status, p: Params) -> bool | None:
    """Rule 8 + 3b.5. With an MRD result: ``< x`` with x <= threshold is not high, a plain value is
    high when >= threshold (Reading: ``< x`` with x above it is undetermined -> NULL, not
    generated). Without one: pre-status R/R uses blasts / 100 (NULL when R/R came from a relapse
    record with no blast result); any other pre-status -> NULL."""
    thr = p.high_mrd_threshold
    if pre.mrd is not None:
        r = pre.mrd
        if r.comparator in ("<", "<="):
            return False if r.value <= thr else None
        return r.value >= thr
    if pre.status == RR and pre.blasts is not None:
        return pre.blasts / 100.0 >= thr
    return None


def _latest_value(tl: PatientTimeline, var: str, lo: date, hi: date) -> float | None:
    """Latest value of ``var`` dated in [lo, hi]. Reading: same-date values -> the highest (e.g.
    post values of one course and pre values of the next on one day)."""
    vals = [(m.day, m.canonical) for m in tl.measurements
            if m.variable == var and lo <= m.day <= hi and m.canonical is not None]
    if not vals:
        return None
    last = max(d for d, _ in vals)
    return max(v for d, v in vals if d == last)


def _closest_value(tl: PatientTimeline, var: str, target: date, half: int) -> float | None:
    """Rule 10 post value: closest to ``target`` in [target - half, target + half]; a tie in
    distance goes to the earlier date. Reading: same-date values -> the highest (this occurs when
    the next course's pre values fall on the chosen day)."""
    vals = [(abs((m.day - target).days), m.day, m.canonical) for m in tl.measurements
            if m.variable == var and abs((m.day - target).days) <= half and m.canonical is not None]
    if not vals:
        return None
    dist, day, _ = min(vals, key=lambda x: (x[0], x[1]))
    return max(v for dd, d, v in vals if d == day)


def _peak(tl: PatientTimeline, var: str, lo: date, hi: date) -> float | None:
    vals = [m.canonical for m in tl.measurements
            if m.variable == var and lo <= m.day <= hi and m.canonical is not None]
    return max(vals) if vals else None


def _positive(m: Measurement) -> bool:
    """A qualitative result is positive when its coded answer is positive or its number is > 0."""
    return m.detected is True or (m.detected is None and m.value is not None and m.value > 0)


def _cd19_loss(tl: PatientTimeline, c: Course, p: Params) -> bool | None:
    """Rule 9. True when the latest CD19 value in [start - cd19_window_days, start] is below
    cd19_loss_threshold, or a positive CD19-negative-blast finding is recorded on or before the
    course start (Reading: the window of the sentence binds the count only; the generator places
    findings only where "in the same window" gives the same answer). False when there is a value
    (or a finding result) and neither holds; NULL when there is neither."""
    lo = c.start - _days(p.cd19_window_days)
    val = _latest_value(tl, "cd19_abs", lo, c.start)
    findings = [m for m in tl.measurements if m.variable == "cd19_negative_blasts" and m.day <= c.start]
    if (val is not None and val < p.cd19_loss_threshold) or any(_positive(m) for m in findings):
        return True
    if val is not None or findings:
        return False
    return None


def _max_grade(tl: PatientTimeline, kind: str, c: Course) -> int | None:
    """3b.8: highest grade of ``kind`` records dated in [start, end]; ungraded codes give none."""
    grades = [x.grade for x in tl.conditions
              if x.kind == kind and c.start <= x.day <= c.end and x.grade is not None]
    return max(grades) if grades else None


def _course_row(tl: PatientTimeline, c: Course, p: Params) -> dict[str, Any]:
    pre = status_at(tl, c.start, p)
    rdate = _response_date(tl, c, p)
    post = _status_of_day(tl, rdate, p) if rdate else None
    post_status = post.status if post else NE
    cr = maintained = None
    if post is not None:
        if pre.status == RR:
            # 3b.6: cr = the response date's blasts < 5 %, even when post_status is unknown.
            # Reading: with no blast result that day, cr follows post_status (CR-* true, R/R false).
            if post.blasts is not None:
                cr = post.blasts < p.blast_cr_threshold_pct
            else:
                cr = post_status in _CR if post_status != UNKNOWN else None
        elif pre.status == MRDPOS:
            # "cr" = MRD-negative. Reading: R/R or still MRD-positive -> false; post unknown -> NULL.
            cr = None if post_status == UNKNOWN else post_status == MRDNEG
        elif pre.status == MRDNEG:
            maintained = None if post_status == UNKNOWN else post_status == MRDNEG
    lo14 = c.start - _days(p.tcell_pre_window_days)
    row: dict[str, Any] = {
        "course_number": c.number,
        "course_start": c.start,
        "course_end": c.end,
        "infusion_days": c.infusion_days,
        "pre_status": pre.status,
        "pre_mrd": _stored_mrd(pre.mrd),
        "pre_blasts_pct": pre.blasts,
        "post_status": post_status,
        "post_mrd": _stored_mrd(post.mrd) if post else None,
        "cr": cr,
        "mrd_maintained": maintained,
        "high_mrd": _high_mrd(pre, p),
        "cd19_loss": _cd19_loss(tl, c, p),
    }
    for short, var in (("cd3", "cd3_abs"), ("cd4", "cd4_abs"), ("cd8", "cd8_abs")):
        row[f"{short}_pre"] = _latest_value(tl, var, lo14, c.start)
        row[f"{short}_post"] = _closest_value(tl, var, c.end, p.tcell_post_window_days)
    for var in ("il6", "il10", "ifng", "tnfa"):
        row[f"{var}_peak"] = _peak(tl, var, c.start, c.end + _days(p.cytokine_peak_after_days))
    row["crs_max_grade"] = _max_grade(tl, "crs", c)
    row["icans_max_grade"] = _max_grade(tl, "icans", c)
    return row


def _chemo(tl: PatientTimeline):
    return [a for a in tl.administrations if a.kind == "chemotherapy"]


def _efs(tl: PatientTimeline, courses: list[Course], rows: list[dict], last_fu: date,
         p: Params) -> tuple[bool, str | None, date]:
    """Rule 14. Events: ``non_response`` (course-1 pre-status R/R and cr false: day 0);
    ``relapse`` = the first date after index with a blast result >= 5 % or a relapse record that
    follows a CR date; ``death``. Reading: CR dates are index (when course 1's pre-status is
    CR-MRDpos/CR-MRDneg) and the dates on or after index of blast/MRD results at which the rule-2
    status is CR-MRDpos or CR-MRDneg; "follows" = strictly later. Ties between event kinds (not
    generated) resolve non_response, relapse, death."""
    index = courses[0].start
    if rows[0]["pre_status"] == RR and rows[0]["cr"] is False:
        return True, "non_response", index
    thr = p.blast_cr_threshold_pct
    result_days = sorted({m.day for m in tl.measurements
                          if m.variable in ("marrow_blasts", "mrd") and m.day >= index})
    cr_days = [d for d in result_days if status_at(tl, d, p).status in _CR]
    if rows[0]["pre_status"] in _CR:
        cr_days.append(index)
    first_cr = min(cr_days) if cr_days else None
    relapse: date | None = None
    if first_cr is not None:
        rr_days = [m.day for m in tl.measurements
                   if m.variable == "marrow_blasts" and m.canonical is not None and m.canonical >= thr]
        rr_days += [c.day for c in tl.conditions if c.kind == "relapse"]
        after = [d for d in rr_days if d > index and d > first_cr]
        relapse = min(after) if after else None
    death = tl.death_date
    if relapse is not None and (death is None or relapse <= death):
        return True, "relapse", relapse
    if death is not None:
        return True, "death", death
    return False, None, last_fu


def derive(tl: PatientTimeline, p: Params) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """All rules for one patient: (course rows, patient row); ([], None) without a course.

    Patient-level readings:

    * "chemotherapy administered/given in window W" (rules 4, 6) = an administration whose start
      date is in W; rule 12 "resumed in the window" likewise. The generator asserts that the
      overlap reading (any administration day in W) gives the same answers on its data.
    * Rule 4 status "at the start of that chemotherapy" = rule 2 at the administration's start;
      rule 5 uses the earliest burden-reduction administration.
    * Rule 12 window = (last course_end, last course_end + bridge_window_days] (3b.1); HSCT and
      CAR-T on the same day (not generated) -> HSCT.
    * last_followup (rule 13, 3b.10) = the latest date of any record that is data: every start
      and end date, visits, death, observation period end.
    """
    courses = find_courses(tl, p.course_gap_days)
    if not courses:
        return [], None
    key = {"site_id": tl.site_id, "person_id": tl.person_id, "person_source_value": tl.mrn}
    rows = [{**key, **_course_row(tl, c, p)} for c in courses]
    index = courses[0].start
    chemo = _chemo(tl)
    br = sorted(a.start for a in chemo
                if index - _days(p.burden_window_days) <= a.start < index and status_at(tl, a.start, p).status == RR)
    referral = status_at(tl, br[0], p).status if br else rows[0]["pre_status"]
    if referral == RR:
        indication = RR
    elif referral == MRDPOS and any(index - _days(p.delay_window_days) <= a.start < index for a in chemo):
        indication = MRDPOS
    else:
        indication = "chemo_delay"
    cyto = {v: any(m.variable == v and m.day <= index and _positive(m) for m in tl.measurements)
            for v in ("poor_cytogenetics", "bcr_abl1")}
    last_end = courses[-1].end
    hi = last_end + _days(p.bridge_window_days)
    bridges = sorted((x.day, 0 if x.kind == "hsct" else 1, x.kind) for x in tl.procedures
                     if x.kind in ("hsct", "car_t") and last_end < x.day <= hi)
    if bridges:
        next_therapy = {"hsct": "HSCT", "car_t": "CAR-T"}[bridges[0][2]]
    elif any(last_end < a.start <= hi for a in chemo):
        next_therapy = "protocol"
    else:
        next_therapy = "none"
    last_fu = max(tl.record_dates())
    efs_event, efs_type, efs_date = _efs(tl, courses, rows, last_fu, p)
    patient = {
        **key,
        "sex": tl.sex,
        "age_at_index_years": (index - tl.birth_date).days / 365.25,
        "index_date": index,
        "n_courses": len(courses),
        "indication": indication,
        "status_at_referral": referral,
        "burden_reduction": bool(br),
        "poor_cytogenetics": cyto["poor_cytogenetics"],
        "bcr_abl1": cyto["bcr_abl1"],
        "next_therapy": next_therapy,
        "last_followup": last_fu,
        "efs_event": efs_event,
        "efs_event_type": efs_type,
        "efs_days": (efs_date - index).days,
        "os_event": tl.death_date is not None,
        "os_days": ((tl.death_date or last_fu) - index).days,
    }
    return rows, patient
