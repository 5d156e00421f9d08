"""The designed cohort: 105 reference patient specs that echo the protocol's section 1 flow, and the
seeded builder that turns a spec into a dated event timeline at one center.

A :class:`Spec` fixes the categories (group in the flow, course outcomes, EFS/OS events, next
therapy, risk markers, rule-edge cases); the builder draws the dates and values from a per-patient
random stream. The truth is never taken from the spec: it is derived from the built timeline by
:mod:`blina_study.adapter.synth.oracle`, and :func:`check_design` asserts that it lands in the designed
categories.

Groups (protocol section 1): A R/R direct (8), B R/R burden-reduction still R/R (3), C R/R
burden-reduction -> CR-MRDpos (10), D R/R burden-reduction -> CR-MRDneg (9), E CR-MRDpos with
chemotherapy in the delay window (indication CR-MRDpos, 21), F CR-MRDpos without it (chemo_delay,
9), G CR-MRDneg (chemo_delay, 45).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from blina_study.adapter.errors import BlinaError
from blina_study.adapter.synth.catalog import Catalog
from blina_study.adapter.synth.timeline import (
    Administration,
    ConditionRecord,
    Measurement,
    PatientTimeline,
    ProcedureRecord,
)

__all__ = [
    "CENTERS",
    "CenterStyle",
    "REFERENCE_SIZE",
    "Spec",
    "build_timeline",
    "check_design",
    "reference_specs",
    "specs_for",
]

REFERENCE_SIZE = 105
_BASE = date(2017, 1, 1)
_CUTOFF = date(2025, 6, 30)  # data extraction date: follow-up ends here at the latest


def _d(n: int) -> timedelta:
    return timedelta(days=n)


@dataclass(frozen=True)
class CenterStyle:
    """How a center records things. ``cd_units``: units of the CD counts (drawn per patient);
    ``cytokine_unit``; ``local``: laboratory codes are the overlay's local source values;
    ``base_noise``: irrelevant records per patient at K = 0 (the NDJSON center's realistic noise);
    ``errors``: the center has entered-in-error / not-done records."""

    site_id: str
    kind: str  # fhir_bundle / fhir_ndjson / omop_standard / omop_local
    folder: str
    weight: int
    cd_units: tuple[str, ...]
    cytokine_unit: str
    local: bool = False
    base_noise: int = 0
    errors: bool = False
    mrn_prefix: str = ""


CENTERS: tuple[CenterStyle, ...] = (
    CenterStyle("center1", "fhir_bundle", "center1_fhir_bundles", 30, ("10*9/L",), "pg/mL", mrn_prefix="A"),
    CenterStyle("center2", "fhir_ndjson", "center2_bulk_ndjson", 25, ("/uL",), "ng/L", base_noise=8,
                errors=True, mrn_prefix="B"),
    CenterStyle("center3", "omop_standard", "center3_omop_standard", 28, ("10*9/L", "10*3/uL"), "pg/mL",
                mrn_prefix="C"),
    CenterStyle("center4", "omop_local", "center4_omop_local", 22, ("/uL",), "pg/mL", local=True,
                mrn_prefix="D"),
)


@dataclass(frozen=True)
class Spec:
    """The designed categories of one patient (see the module docstring for groups).

    ``c1_ok``: course 1 reaches its goal (cr / MRD cleared / MRD maintained). ``later``: courses
    2..n as (pre kind ``neg``/``pos``/``unknown``, ok or None for not evaluable). ``relapse_day`` /
    ``death_day``: days after index. ``edges``: rule-edge cases built into this patient."""

    group: str
    c1_ok: bool
    later: tuple[tuple[str, bool | None], ...] = ()
    relapse_day: int | None = None
    relapse_form: str = "both"  # both / blasts / record
    death_day: int | None = None
    next_therapy: str = "none"
    poor_cyto: bool = False
    bcr: bool = False
    cd19_loss: bool = False
    high_mrd: bool = False
    edges: frozenset[str] = field(default_factory=frozenset)

    @property
    def pre_kind(self) -> str:
        return {"A": "rr", "B": "rr", "C": "pos", "E": "pos", "F": "pos"}.get(self.group, "neg")

    @property
    def referral(self) -> str:
        return {"A": "R/R", "B": "R/R", "C": "R/R", "D": "R/R", "E": "CR-MRDpos", "F": "CR-MRDpos"}.get(
            self.group, "CR-MRDneg")


_NEXT = {
    "R": ("HSCT", "HSCT", "CAR-T", "HSCT", "protocol", "HSCT", "CAR-T", "none"),
    "P": ("HSCT", "protocol", "HSCT", "CAR-T", "protocol", "HSCT", "none"),
    "N": ("protocol", "protocol", "HSCT", "protocol", "none", "protocol", "HSCT"),
}


def reference_specs() -> list[Spec]:
    """The 105 designed patients, ordered by group (so a stride sample keeps the proportions)."""
    specs: list[Spec] = []

    def add(group: str, oks: list[bool], extra: dict[int, dict], nxt: str) -> None:
        for i, ok in enumerate(oks):
            kw = dict(extra.get(i, {}))
            kw.setdefault("next_therapy", _NEXT[nxt][(len(specs) + i) % len(_NEXT[nxt])])
            kw["edges"] = frozenset(kw.get("edges", ()))
            specs.append(Spec(group=group, c1_ok=ok, **kw))

    neg2, neg3, neg4 = (("neg", True),), (("neg", True),) * 2, (("neg", True),) * 3
    # Tuned to the paper where it gives numbers (issue 12, point 6), without touching year 1 (the
    # 1-year KM figures and every course-1 figure stay exact): EFS events after day 365 (relapses
    # at 400-700 in the R/R and CR-MRDpos groups), deaths after day 365 of two relapsed R/R
    # patients, poor cytogenetics also in 14 event-free patients who start in CR-MRDneg (not in
    # the course-1 univariate analysis), BCR-ABL1 no longer in one event-free CR-MRDneg patient.
    # Seed 42 then gives Cox (Efron) P 0.011 / 0.103 / 0.0090 for high_mrd / bcr_abl1 /
    # poor_cytogenetics (paper 0.014 / 0.065 / 0.025), log-rank EFS P 0.0010, OS P 0.038 (paper
    # 0.001, 0.029); found by a search over such changes on the truth tables (issue-12 note).
    # R/R at referral (30): 8 EFS events in year 1 (2 non-response, 6 relapses), 2 deaths in year 1;
    # 2 EFS events (relapses) and 3 deaths later.
    add("A", [True] * 7 + [False], {
        0: dict(relapse_day=200, death_day=480, poor_cyto=True, high_mrd=True),
        1: dict(relapse_day=150, death_day=800, bcr=True, relapse_form="blasts"),
        2: dict(later=neg2),
        3: dict(edges={"mrd_minus31"}),
        4: dict(edges={"br_minus43"}),
        5: dict(edges={"rr_cr_unknown"}),
        6: dict(edges={"relapse_record_status"}),
        7: dict(death_day=150, poor_cyto=True, bcr=True, cd19_loss=True, next_therapy="CAR-T"),
    }, "R")
    add("B", [True, True, False], {
        0: dict(relapse_day=240, edges={"blast_eq5"}),
        2: dict(death_day=290, poor_cyto=True, next_therapy="none"),
    }, "R")
    add("C", [True] * 8 + [False] * 2, {
        0: dict(relapse_day=300, relapse_form="blasts", high_mrd=True),
        1: dict(later=neg2),
        2: dict(edges={"br_minus42"}),
        3: dict(cd19_loss=True),
        7: dict(relapse_day=400),
        8: dict(relapse_day=180, death_day=450, poor_cyto=True, high_mrd=True),
        9: dict(bcr=True, high_mrd=True),
    }, "R")
    add("D", [True] * 9, {
        0: dict(relapse_day=330, relapse_form="record"),
        1: dict(later=neg2, poor_cyto=True),
        2: dict(later=neg2),
        3: dict(later=neg3, poor_cyto=True),
        5: dict(poor_cyto=True),
        8: dict(relapse_day=540),
    }, "R")
    # CR-MRDpos at referral (30): 4 relapses in year 1, no death in year 1; 8 relapses later.
    add("E", [True] * 17 + [False] * 4, {
        0: dict(relapse_day=260, poor_cyto=True, high_mrd=True),
        1: dict(later=neg2),
        2: dict(later=neg2),
        3: dict(later=neg3, relapse_day=400),
        4: dict(edges={"resp_from14"}),
        5: dict(edges={"tcell_tie"}),
        6: dict(edges={"crs_edge"}),
        7: dict(edges={"delay_minus28"}),
        8: dict(cd19_loss=True, relapse_day=700),
        9: dict(edges={"mrd_eq_high"}),
        10: dict(relapse_day=540),
        12: dict(relapse_day=540),
        14: dict(relapse_day=700),
        15: dict(relapse_day=700),
        17: dict(relapse_day=120, death_day=700, poor_cyto=True, high_mrd=True, edges={"cd19neg_finding"}),
        18: dict(relapse_day=210, poor_cyto=True, bcr=True, high_mrd=True),
        19: dict(later=(("pos", True),), bcr=True, cd19_loss=True, high_mrd=True, relapse_day=400),
        20: dict(later=(("pos", False),), bcr=True),
    }, "P")
    add("F", [True] * 8 + [False], {
        0: dict(later=neg2, relapse_day=540),
        1: dict(edges={"delay_minus29"}),
        2: dict(edges={"premed_day0"}),
        3: dict(edges={"chemo_not_rr"}),
        4: dict(edges={"mrd_eq_thr"}),
        8: dict(relapse_day=160, poor_cyto=True, high_mrd=True),
    }, "P")
    # CR-MRDneg at referral (45): one death in year 1 (the only EFS event in year 1); 20 later
    # CR-MRDneg courses in this and the R/R/CR-MRDpos groups, one course loses MRD negativity.
    add("G", [True] * 44 + [False], {
        0: dict(later=neg2, edges={"gap8"}),
        1: dict(later=neg2),
        2: dict(later=neg2),
        3: dict(later=neg2),
        4: dict(later=neg3, poor_cyto=True),
        5: dict(death_day=250, next_therapy="HSCT"),
        6: dict(later=neg4),
        7: dict(later=(("unknown", None),)),
        8: dict(edges={"gap7"}),
        9: dict(edges={"mrd_minus30"}),
        10: dict(relapse_day=420),
        11: dict(edges={"resp_until14"}),
        12: dict(edges={"tcell_edges_in", "cytokine_edge"}),
        13: dict(edges={"tcell_edges_out"}),
        14: dict(edges={"crs_ungraded"}),
        15: dict(edges={"crs_mixed"}),
        16: dict(next_therapy="HSCT", edges={"hsct_plus180"}),
        17: dict(next_therapy="protocol", edges={"hsct_plus181"}),
        18: dict(edges={"bcr_after_index"}),
        19: dict(edges={"dup_blasts"}),
        20: dict(poor_cyto=True),
        22: dict(cd19_loss=True),
        **{i: dict(poor_cyto=True) for i in (25, 30, 31, 32, 33, 35, 36, 39, 41, 43)},
    }, "N")
    assert len(specs) == REFERENCE_SIZE
    return specs


def specs_for(n: int) -> list[Spec]:
    """``n`` patient specs: the reference specs themselves for n = 105, else a stride sample
    (spec ``i * 105 // n``) that keeps the proportions."""
    if n < 1:
        raise BlinaError(f"--patients {n}: need at least 1 patient")
    ref = reference_specs()
    return [ref[i * REFERENCE_SIZE // n] for i in range(n)]


class _Builder:
    """Builds one timeline; ``r`` is the patient's own random stream."""

    def __init__(self, spec: Spec, style: CenterStyle, cat: Catalog, r: random.Random,
                 mrn: str, person_id: int | None) -> None:
        self.s, self.st, self.cat, self.r = spec, style, cat, r
        self.cd_unit = r.choice(style.cd_units)
        self.tl = PatientTimeline(site_id=style.site_id, mrn=mrn, person_id=person_id,
                                  sex=r.choice(("F", "M")), birth_date=_BASE)

    # -- record helpers -------------------------------------------------------------------------
    def meas(self, var: str, day: date, value: float | None, *, comparator: str | None = None,
             detected: bool | None = None, code: tuple[str, str] | None = None, unit: str | None = None,
             form: str = "") -> None:
        local = self.cat.local(var) if self.st.local else None
        if local is not None:
            code, unit = ("LOCAL", local[0]), local[1]
        elif code is None:
            code = self.cat.code(var)
        if unit is None:
            fam = self.cat.study.variables[var].unit_family
            unit = {"percent": "%", "fraction": "%", "cells_per_litre": self.cd_unit,
                    "mass_per_volume": self.st.cytokine_unit}.get(fam or "")
        factor = self.cat.factor(var, unit) if value is not None else None
        canonical = value * factor if (value is not None and factor is not None) else value
        self.tl.measurements.append(Measurement(var, day, value, unit, canonical, comparator, detected, code, form))

    def blasts(self, day: date, pct: float) -> None:
        self.meas("marrow_blasts", day, pct)

    def mrd_pos(self, day: date, pct: float) -> None:
        self.meas("mrd", day, pct)

    def mrd_neg(self, day: date) -> None:
        """A negative MRD in one of its recorded forms: not detected, ``< 0.01 %``, or a number."""
        form = self.r.choice(("nd", "lt", "lt", "val"))
        if form == "nd":
            coded = self.st.kind != "omop_local" and self.r.random() < 0.6
            self.meas("mrd", day, 0.0, comparator="<", form="nd_coded" if coded else "nd_zero")
        elif form == "lt":
            self.meas("mrd", day, 0.01, comparator="<")
        else:
            self.meas("mrd", day, self.r.choice((0.001, 0.002, 0.004, 0.005, 0.008)))

    def chemo(self, start: date, days: int = 1, name: str | None = None) -> None:
        name = name or self.r.choice(("cytarabine", "vincristine", "methotrexate", "mercaptopurine",
                                      "dexamethasone", "pegaspargase", "cyclophosphamide"))
        vc = self.cat.chemo(name)
        self.tl.administrations.append(Administration("chemotherapy", start, start + _d(days - 1), vc[1], name))

    def blina(self, start: date, end: date) -> None:
        form = self.r.choice(("product", "ingredient", "ref")) if self.st.kind.startswith("fhir") else \
            self.r.choice(("product", "ingredient"))
        key = "product" if form == "ref" else form
        self.tl.administrations.append(Administration(
            "blinatumomab", start, end, self.cat.blinatumomab[key][1], "blinatumomab", form))

    def relapse(self, day: date) -> None:
        vocab = "BLINA" if self.r.random() < 0.2 else "ICD10CM"
        self.tl.conditions.append(ConditionRecord("relapse", day, self.cat.code("relapse", vocab)))

    def u(self, a: float, b: float, nd: int = 1) -> float:
        return round(self.r.uniform(a, b), nd)

    # -- the patient ----------------------------------------------------------------------------
    def build(self) -> PatientTimeline:
        r, tl = self.r, self.tl
        idx = _BASE + _d(r.randint(0, 6 * 365))
        age_days = r.randint(int(1.5 * 365), int(17.5 * 365))
        tl.birth_date = idx - _d(age_days)
        diag = idx - _d(r.randint(150, min(1400, age_days - 60)))
        self.idx, self.diag = idx, diag
        tl.conditions.append(ConditionRecord("diagnosis", diag, self.cat.code("b_all_diagnosis", "ICD10CM")))
        tl.visits.append((diag, diag + _d(r.randint(20, 35))))
        # Front-line induction: long before every rule window.
        for k, name in enumerate(("vincristine", "dexamethasone", "pegaspargase", "daunorubicin")):
            self.chemo(diag + _d(2 + 7 * k), 1 if name != "dexamethasone" else 7, name)
        self._genetics()
        self._referral()
        last_end = self._courses()
        self._after(last_end)
        return tl

    def _genetics(self) -> None:
        s, day, cat = self.s, self.diag + _d(1), self.cat
        cyto_code = cat.code("poor_cytogenetics", index=self.r.randrange(8))
        self.meas("poor_cytogenetics", day, None, detected=s.poor_cyto, code=cyto_code)
        if "bcr_after_index" in s.edges:
            self.meas("bcr_abl1", day, None, detected=False, code=cat.code("bcr_abl1", index=0))
            self.meas("bcr_abl1", self.idx + _d(45), None, detected=True, code=cat.code("bcr_abl1", index=0))
            return
        if self.st.kind == "omop_standard" and self.r.random() < 0.4:
            # BCR-ABL1/ABL1 ratio: a number > 0 is detected.
            val = round(self.r.uniform(0.05, 0.9), 3) if s.bcr else 0.0
            self.meas("bcr_abl1", day, val, code=cat.code("bcr_abl1", index=2), unit="1")
        else:
            self.meas("bcr_abl1", day, None, detected=s.bcr, code=cat.code("bcr_abl1", index=0))
        if s.bcr:  # TKI: not chemotherapy (study.yaml), given across every window
            im = self.cat.drug("imatinib")
            self.tl.administrations.append(Administration(
                "other", self.diag + _d(30), self.idx + _d(90), im[1], "imatinib"))

    def _pre_values(self, day: date, kind: str) -> None:
        """Pre-course assessment (blasts + MRD) for a pre-status kind."""
        s = self.s
        if kind == "rr":
            self.blasts(day, 5.0 if "blast_eq5" in s.edges else self.u(8, 70))
            if self.r.random() < 0.4 and "mrd_minus31" not in s.edges:
                self.mrd_pos(day, self.u(6, 40, 2))
        elif kind == "pos":
            self.blasts(day, self.u(0.2, 3.5))
            if "mrd_eq_thr" in s.edges:
                self.mrd_pos(day, 0.01)
            elif "mrd_eq_high" in s.edges:
                self.mrd_pos(day, 0.1)
            elif s.high_mrd or (not s.c1_ok and self.r.random() < 0.7) or self.r.random() < 0.25:
                self.mrd_pos(day, self.u(0.12, 3.0, 2))
            else:
                self.mrd_pos(day, self.u(0.012, 0.09, 3))
        elif kind == "neg":
            if "dup_blasts" in s.edges:
                self.blasts(day, 1.2)
                self.blasts(day, 2.4)
            else:
                self.blasts(day, self.u(0.1, 2.5))
            if "mrd_minus30" in s.edges:
                self.mrd_neg(self.idx - _d(30))
            else:
                self.mrd_neg(day)
        elif kind == "unknown":
            self.blasts(day, self.u(0.1, 2.5))

    def _referral(self) -> None:
        """Results and chemotherapy before course 1 (rules 2, 4, 5, 6)."""
        s, r, idx = self.s, self.r, self.idx
        g = s.group
        if g == "A":
            rel = idx - _d(45 if "br_minus43" in s.edges else r.randint(5, 25))
            if "relapse_record_status" in s.edges:
                # Blasts < 5 % then a relapse record after it (CNS relapse): R/R by the record.
                self.blasts(idx - _d(20), self.u(1.0, 4.0))
                self.relapse(idx - _d(5))
                self.tl.visits.append((idx - _d(5), idx - _d(5)))
            else:
                self.blasts(rel, self.u(20, 90))
                self.relapse(rel)
                if "br_minus43" in s.edges:
                    self.chemo(idx - _d(43), 1, "cytarabine")  # R/R but outside the burden window
                self._pre_values(idx - _d(r.randint(0, 3)), "rr")
            if "mrd_minus31" in s.edges:
                self.mrd_pos(idx - _d(31), 2.0)
        elif g in "BCD":
            b = idx - _d(42 if "br_minus42" in s.edges else r.randint(35, 41))
            rel = b - _d(r.randint(1, 5))
            self.blasts(rel, self.u(15, 85))
            self.relapse(rel)
            self.chemo(b, 5, "cytarabine")
            self.chemo(b, 5, "dexamethasone")
            self.chemo(b + _d(7), 1, "vincristine")
            self._pre_values(idx - _d(r.randint(1, 7)), {"B": "rr", "C": "pos", "D": "neg"}[g])
        elif g == "E":
            prior = idx - _d(r.randint(40, 55))
            self.blasts(prior, self.u(0.2, 3.0))
            self.mrd_pos(prior, self.u(0.02, 1.5, 2))
            c = idx - _d(28 if "delay_minus28" in s.edges else r.randint(4, 27))
            self.chemo(c, min(r.randint(1, 5), (idx - c).days), r.choice(("mercaptopurine", "methotrexate")))
            self._pre_values(idx - _d(r.randint(0, 4)), "pos")
        elif g == "F":
            if "delay_minus29" in s.edges:
                self.chemo(idx - _d(29), 1, "methotrexate")
            elif "chemo_not_rr" in s.edges:
                self.blasts(idx - _d(45), 1.0)
                self.mrd_pos(idx - _d(45), 0.4)
                self.chemo(idx - _d(40), 3, "mercaptopurine")  # in the burden window, status not R/R
            else:
                self.chemo(idx - _d(r.randint(60, 120)), 3, "mercaptopurine")
            if "premed_day0" in s.edges:
                self.chemo(idx, 1, "dexamethasone")  # premedication: part of course 1 (3b.9)
            self._pre_values(idx - _d(r.randint(0, 5)), "pos")
        else:  # G
            if r.random() < 0.5:
                c = idx - _d(r.randint(3, 27))
                self.chemo(c, min(r.randint(1, 5), (idx - c).days), r.choice(("mercaptopurine", "methotrexate")))
            self._pre_values(idx - _d(3 if "mrd_minus30" in s.edges else r.randint(0, 6)), "neg")
        if g != "A" and "mrd_minus31" in s.edges:  # pragma: no cover - design guard
            raise AssertionError("mrd_minus31 is an R/R edge")

    def _course_admins(self, cs: date) -> date:
        """Blinatumomab administrations of one course starting ``cs``; returns course_end."""
        s, r = self.s, self.r
        length = r.choice((28, 28, 28, 21, 14)) if s.pre_kind == "rr" else r.choice((28, 28, 28, 21))
        if "gap7" in s.edges and not self._gap7_done:
            self._gap7_done = True
            self.blina(cs, cs + _d(9))
            self.blina(cs + _d(16), cs + _d(27))  # gap 16 - 9 = 7 days: the same course
            return cs + _d(27)
        cuts: list[tuple[date, date]] = []
        if r.random() < 0.2:  # an interruption of 2..6 days inside the course
            first = r.randint(5, length - 6)
            gap = r.randint(2, 6)
            cuts = [(cs, cs + _d(first)), (cs + _d(first + gap), cs + _d(length - 1 + gap - 1))]
        else:
            bag = r.choice((4, 7, length))
            d = 0
            while d < length:
                cuts.append((cs + _d(d), cs + _d(min(d + bag, length) - 1)))
                d += bag
        for a, b in cuts:
            self.blina(a, b)
        return cuts[-1][1]

    def _course_extras(self, k: int, cs: date, ce: date) -> None:
        """T cells, CD19, cytokines, CRS/ICANS of a course."""
        s, r = self.s, self.r
        if "tcell_edges_in" in s.edges and k == 0:
            pre_day, post_days = cs - _d(14), [ce + _d(7)]
        elif "tcell_edges_out" in s.edges and k == 0:
            pre_day, post_days = cs - _d(15), [ce + _d(8)]
        elif "tcell_tie" in s.edges and k == 0:
            pre_day, post_days = cs - _d(r.randint(0, 10)), [ce - _d(3), ce + _d(3)]
        elif r.random() < 0.85:
            pre_day, post_days = cs - _d(r.randint(0, 10)), [ce + _d(r.randint(-5, 5))]
        else:
            pre_day, post_days = None, []
        if pre_day is not None:
            cd3 = min(max(r.lognormvariate(-0.04, 0.75), 0.03), 3.79)
            parts = {"cd3_abs": cd3, "cd4_abs": cd3 * r.uniform(0.3, 0.45), "cd8_abs": cd3 * r.uniform(0.35, 0.5)}
            for var, v in parts.items():
                self._cells(var, pre_day, v)
            for j, day in enumerate(post_days):
                rise = min(max(r.lognormvariate(0.18, 0.45), 0.5), 4.0) * (1 + 0.3 * j)
                for var, v in parts.items():
                    self._cells(var, day, v * rise)
        cd19_day = pre_day if pre_day is not None and pre_day >= cs - _d(14) else cs - _d(r.randint(0, 10))
        if s.cd19_loss and k == 0:
            self._cells("cd19_abs", cd19_day, r.uniform(0.001, 0.008))
        elif r.random() < 0.9:
            self._cells("cd19_abs", cd19_day, r.uniform(0.02, 0.8))
        if "cd19neg_finding" in s.edges and k == 0:
            self.meas("cd19_negative_blasts", cs - _d(5), None, detected=True)
        crs_grade = None
        if "crs_edge" in s.edges and k == 0:
            self._crs("crs", cs, 2)
            self._crs("crs", ce + _d(1), 3)  # after the course: not counted
            crs_grade = 2
        elif "crs_ungraded" in s.edges and k == 0:
            self._crs("crs", cs + _d(1), None)
        elif "crs_mixed" in s.edges and k == 0:
            self._crs("crs", cs + _d(1), None)
            self._crs("crs", cs + _d(2), 2)
            crs_grade = 2
        elif r.random() < (0.35 if k == 0 else 0.15):
            crs_grade = r.choices((1, 2, 3), (6, 3, 1))[0]
            self._crs("crs", cs + _d(r.randint(0, 3)), crs_grade)
        if r.random() < 0.08:
            self._crs("icans", cs + _d(r.randint(2, 7)), r.choice((1, 1, 2)))
        if crs_grade and crs_grade >= 2:
            toc = self.cat.drug("tocilizumab")
            day = cs + _d(2)
            self.tl.administrations.append(Administration("other", day, day, toc[1], "tocilizumab"))
        if r.random() < 0.7 or "cytokine_edge" in s.edges:
            boost = 3.0 if crs_grade else 1.0
            base = {"il6": 12.0, "il10": 25.0, "ifng": 10.0, "tnfa": 6.0}
            for var, b in base.items():
                for off in (1, 2, 3, 7):
                    shape = {1: 0.8, 2: 1.6, 3: 1.1, 7: 0.4}[off]
                    val = round(b * boost * shape * r.lognormvariate(0, 0.5), 1)
                    self.meas(var, cs + _d(off), val)
                if "cytokine_edge" in s.edges and k == 0:
                    self.meas(var, ce + _d(3), round(b * 4.0, 1))   # last day of the peak window
                    self.meas(var, ce + _d(4), round(b * 9.0, 1))   # one day later: not the peak

    def _cells(self, var: str, day: date, v10_9: float) -> None:
        """A cell count drawn in 10^9/L, recorded in the center's unit with a clean decimal."""
        unit = self.cat.local(var)[1] if self.st.local else self.cd_unit
        if unit == "/uL":
            self.meas(var, day, float(max(1, round(v10_9 * 1000))))
        else:
            self.meas(var, day, round(max(v10_9, 0.001), 3))

    def _crs(self, kind: str, day: date, grade: int | None) -> None:
        self.tl.conditions.append(ConditionRecord(kind, day, self.cat.graded(kind)[grade], grade))

    def _response(self, k: int, cs: date, ce: date, kind: str, ok: bool | None) -> date | None:
        s, r = self.s, self.r
        if ok is None:  # not evaluable: the first result is one day after the window
            day = ce + _d(15)
            self.blasts(day, self.u(0.1, 2.0))
            self.mrd_neg(day)
            return day
        if "resp_from14" in s.edges and k == 0:
            self.blasts(cs + _d(13), 1.0)
            self.mrd_pos(cs + _d(13), 0.3)  # one day before the window: not the response
            day = cs + _d(14)
        elif "resp_until14" in s.edges and k == 0:
            day = ce + _d(14)
        else:
            # a 14-day course ends before the response window opens (start + response_from_day)
            day = max(ce + _d(r.randint(0, 6)), cs + _d(self.cat.study.params.response_from_day))
        if kind == "rr":
            if ok:
                self.blasts(day, self.u(0.2, 4.5))
                if "rr_cr_unknown" not in s.edges:
                    if r.random() < 0.5:
                        self.mrd_pos(day, self.u(0.02, 2.0, 2))
                    else:
                        self.mrd_neg(day)
            else:
                self.blasts(day, self.u(10, 60))
        elif kind == "pos":
            self.blasts(day, self.u(0.1, 2.0))
            if ok:
                self.mrd_neg(day)
            else:
                self.mrd_pos(day, self.u(0.02, 1.5, 2))
        else:  # neg
            self.blasts(day, self.u(0.1, 2.0))
            if ok:
                self.mrd_neg(day)
            else:
                self.mrd_pos(day, 0.05)
        return day

    _gap7_done = False

    def _courses(self) -> date:
        s, r = self.s, self.r
        plan: list[tuple[str, bool | None]] = [(s.pre_kind, s.c1_ok), *s.later]
        cs, resp, ce = self.idx, None, self.idx
        self.courses: list[tuple[date, date]] = []
        for k, (kind, ok) in enumerate(plan):
            if k > 0:
                assert resp is not None
                if "gap8" in s.edges and k == 1:
                    cs = ce + _d(8)  # a gap of 8 days: a new course; its pre-status is the last response
                else:
                    cs = ce + _d(r.randint(45, 60) if kind == "unknown" else r.randint(16, 35))
                    pre = max(resp + _d(1), cs - _d(r.randint(0, 7)))
                    self._pre_values(pre, kind)
            ce = self._course_admins(cs)
            self.tl.visits.append((cs, ce))
            self.courses.append((cs, ce))
            self._course_extras(k, cs, ce)
            resp = self._response(k, cs, ce, kind, ok)
        return ce

    def _after(self, last_end: date) -> None:
        """Next therapy, relapse, death, follow-up visits."""
        s, r, tl, idx = self.s, self.r, self.tl, self.idx
        nt = s.next_therapy
        if nt == "HSCT":
            day = last_end + _d(180 if "hsct_plus180" in s.edges else r.randint(30, 120))
            tl.procedures.append(ProcedureRecord("hsct", day, self.cat.code("hsct", index=r.randrange(13))))
        elif nt == "CAR-T":
            day = last_end + _d(r.randint(40, 80))
            tl.procedures.append(ProcedureRecord("car_t", day, self.cat.code("car_t", index=2)))
        elif nt == "protocol":
            self.chemo(last_end + _d(30 if "hsct_plus181" in s.edges else r.randint(7, 60)), r.randint(5, 28),
                       r.choice(("mercaptopurine", "methotrexate")))
            if "hsct_plus181" in s.edges:
                tl.procedures.append(ProcedureRecord("hsct", last_end + _d(181), self.cat.code("hsct", index=0)))
        if s.relapse_day is not None:
            day = idx + _d(s.relapse_day)
            if s.relapse_form in ("both", "blasts"):
                self.blasts(day, self.u(20, 80))
            if s.relapse_form in ("both", "record"):
                self.relapse(day)
            tl.visits.append((day, day + _d(r.randint(0, 10))))
        death = idx + _d(s.death_day) if s.death_day is not None else None
        latest = max(tl.record_dates())
        if death is not None:
            if death <= latest:
                raise AssertionError(f"design: death {death} before other records of {tl.mrn}")
            end = death
            tl.death_date = death
        else:
            end = max(min(idx + _d(r.randint(420, 1600)), _CUTOFF), latest + _d(30))
        day = last_end + _d(r.randint(20, 60))
        while day < end:
            tl.visits.append((day, day))
            day += _d(r.randint(30, 120))
        if death is None:
            tl.visits.append((end, end))
        tl.observation_start = min(tl.record_dates())
        if self.st.kind.startswith("omop"):
            tl.observation_end = end


def build_timeline(spec: Spec, style: CenterStyle, cat: Catalog, rng: random.Random, mrn: str,
                   person_id: int | None) -> tuple[PatientTimeline, list[tuple[date, date]]]:
    """Build one patient's timeline at a center. Returns (timeline, designed course periods)."""
    b = _Builder(spec, style, cat, rng, mrn, person_id)
    tl = b.build()
    return tl, b.courses


def check_design(spec: Spec, courses: list[dict], patient: dict, landmark: int) -> list[str]:
    """Compare the oracle's rows with the designed categories; returns the differences."""
    out = []
    exp_pre = {"rr": "R/R", "pos": "CR-MRDpos", "neg": "CR-MRDneg"}[spec.pre_kind]
    if courses[0]["pre_status"] != exp_pre:
        out.append(f"course 1 pre_status {courses[0]['pre_status']} != {exp_pre}")
    if patient["status_at_referral"] != spec.referral:
        out.append(f"status_at_referral {patient['status_at_referral']} != {spec.referral}")
    exp_ind = {"A": "R/R", "B": "R/R", "C": "R/R", "D": "R/R", "E": "CR-MRDpos"}.get(spec.group, "chemo_delay")
    if patient["indication"] != exp_ind:
        out.append(f"indication {patient['indication']} != {exp_ind}")
    if patient["burden_reduction"] != (spec.group in "BCD"):
        out.append(f"burden_reduction {patient['burden_reduction']}")
    if patient["n_courses"] != 1 + len(spec.later):
        out.append(f"n_courses {patient['n_courses']} != {1 + len(spec.later)}")
    col = "mrd_maintained" if spec.pre_kind == "neg" else "cr"
    if courses[0][col] is not spec.c1_ok:
        out.append(f"course 1 {col} {courses[0][col]} != {spec.c1_ok}")
    for k, (kind, ok) in enumerate(spec.later, start=2):
        if k > len(courses):
            break
        c = courses[k - 1]
        exp = {"neg": "CR-MRDneg", "pos": "CR-MRDpos", "unknown": "unknown"}[kind]
        if c["pre_status"] != exp:
            out.append(f"course {k} pre_status {c['pre_status']} != {exp}")
        col = "mrd_maintained" if kind == "neg" else "cr"
        if kind != "unknown" and c[col] is not ok:
            out.append(f"course {k} {col} {c[col]} != {ok}")
        if kind == "unknown" and c["post_status"] != "NE":
            out.append(f"course {k} post_status {c['post_status']} != NE")
    if spec.pre_kind == "rr" and not spec.c1_ok:
        exp_efs: tuple[str | None, int | None] = ("non_response", 0)
    elif spec.relapse_day is not None:
        exp_efs = ("relapse", spec.relapse_day)
    elif spec.death_day is not None:
        exp_efs = ("death", spec.death_day)
    else:
        exp_efs = (None, None)
    if patient["efs_event_type"] != exp_efs[0] or (exp_efs[1] is not None and patient["efs_days"] != exp_efs[1]):
        out.append(f"EFS {patient['efs_event_type']}@{patient['efs_days']} != {exp_efs}")
    if exp_efs[0] is None and patient["efs_days"] <= landmark:
        out.append(f"censored at day {patient['efs_days']} before {landmark}")
    if patient["next_therapy"] != spec.next_therapy:
        out.append(f"next_therapy {patient['next_therapy']} != {spec.next_therapy}")
    if patient["poor_cytogenetics"] != spec.poor_cyto or patient["bcr_abl1"] != spec.bcr:
        out.append("cytogenetics differ from design")
    if courses[0]["cd19_loss"] is True and not spec.cd19_loss and "cd19neg_finding" not in spec.edges:
        out.append("unexpected cd19_loss")
    return out
