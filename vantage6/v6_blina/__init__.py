"""vantage6 algorithm for the blina-study pooled analyses: exact, one round; and the Cox model
as a multi-round Newton iteration.

* ``partial`` runs at each node on two databases, the site's ``course`` and ``patient`` tables
  (study-protocol section 4, in that order), and returns that site's sufficient statistics
  (``blina_study.analysis.federated.site_statistics``). They are the *coordinator-only* pooling inputs:
  unsuppressed, so the pooled result is exact. Before returning, the node scans them for
  person-level field names, dates and its own source ids, and refuses to return them if any
  is found, or if the site has fewer than ``BLINA_MIN_PATIENTS`` patients (node setting via
  ``algorithm_env``, default 5).
* ``central`` sends ``partial`` to every organization of the collaboration, waits for the
  statistics and pools them (``blina_study.analysis.federated.pool_site_statistics``): KM, log-rank and
  site-stratified log-rank, Fisher + CMH, site-stratified Cox (Efron), pooled Wilcoxon and the
  count tables. It refuses to pool fewer than ``min_organizations`` sites (default 3), so no
  site can difference the pooled result against its own data.
* ``central_cox`` fits the Cox model over the organizations by R's Newton iteration (start 0,
  step halving, ``|1 - L_old/L_new| <= 1e-9``, iter.max 20), one subtask (``partial_cox``) per
  round at the proposed coefficients (``blina_study.analysis.federated.cox_rounds``). ``model="stratified"``
  (default, site as stratum): each node returns only its log-likelihood, score vector and
  information matrix. ``model="unstratified"`` (one baseline hazard): a setup round of event
  days, then per round each node's risk-set sums at the union grid of event days (per-site
  score/information do not add up to this model; the module docstring says what that reveals);
  a node answers these rounds only with ``BLINA_COX_UNSTRATIFIED=true`` in its algorithm_env.
  Both equal the centralized fit of the concatenated complete cases (tests/test_v6_cox.py).

Node databases: both partials take the site's ``course`` and ``patient`` tables as two
databases, in that order, of any type vantage6 loads into a DataFrame (csv, parquet, excel;
csv tested). An OMOP database type is not supported: vantage6 4.15 connects to it through R
(``ohdsi.database_connector``), and the study views need blina-study's SQLAlchemy 2 runner,
which cannot be installed beside vantage6-algorithm-tools' SQLAlchemy 1.4 pin; run
``blina extract`` on the node's OMOP database and give the node its two CSV files.

The math lives in blina-study (``blina_study.analysis.federated``), installed next to this package; this
module only adapts it to vantage6's decorators.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from vantage6.algorithm.tools.decorators import algorithm_client, data
from vantage6.algorithm.tools.exceptions import AlgorithmError, PrivacyThresholdViolation
from vantage6.algorithm.tools.util import get_env_var, info

from blina_study.analysis.federated import (
    FederatedParams,
    pool_site_statistics,
    scan_statistics,
    site_statistics,
)
from blina_study.analysis.federated.cox_rounds import (
    cox_design,
    federated_cox_fit,
    site_cox_derivatives,
    site_cox_setup,
    site_risk_set_sums,
)

__all__ = ["central", "central_cox", "partial", "partial_cox"]

DEFAULT_MIN_PATIENTS = 5
DEFAULT_MIN_ORGANIZATIONS = 3


def _site_id(course: pd.DataFrame, patient: pd.DataFrame) -> str:
    ids = set()
    for name, df in (("course", course), ("patient", patient)):
        if "site_id" not in df.columns:
            raise AlgorithmError(f"the {name} table has no site_id column (protocol section 4)")
        ids |= {str(s) for s in df["site_id"].dropna().unique()}
    if len(ids) != 1:
        raise AlgorithmError(
            f"the node's tables must hold exactly one site_id, found {sorted(ids)}"
        )
    return ids.pop()


def _check_min_patients(patient: pd.DataFrame) -> None:
    # Node administrators set this in the node's algorithm_env (vantage6 encodes the value).
    min_patients = get_env_var("BLINA_MIN_PATIENTS", str(DEFAULT_MIN_PATIENTS), as_type="int")
    if len(patient) < min_patients:
        raise PrivacyThresholdViolation(
            f"this site has {len(patient)} patients, fewer than the node's minimum "
            f"{min_patients} (BLINA_MIN_PATIENTS); refusing to share statistics"
        )


@data(2)
def partial(
    course: pd.DataFrame, patient: pd.DataFrame, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One site's sufficient statistics (JSON) from its course and patient tables."""
    _check_min_patients(patient)
    site = _site_id(course, patient)
    info(f"computing statistics of site {site}: {len(patient)} patients, {len(course)} courses")
    stats = site_statistics(
        course, patient, site_id=site, params=FederatedParams.from_dict(params)
    )
    source_ids = (
        patient["person_source_value"].dropna().astype(str).tolist()
        if "person_source_value" in patient.columns
        else []
    )
    findings = scan_statistics(stats, source_ids=source_ids)
    if findings:
        raise PrivacyThresholdViolation(
            f"refusing to return statistics: {len(findings)} disclosure finding(s), first: "
            f"{findings[0]}"
        )
    return stats


@algorithm_client
def central(
    client: Any,
    params: dict[str, Any] | None = None,
    min_organizations: int = DEFAULT_MIN_ORGANIZATIONS,
    include_per_site: bool = True,
) -> dict[str, Any]:
    """Pool the statistics of every organization in the collaboration (one round)."""
    org_ids = [org["id"] for org in client.organization.list()]
    if len(org_ids) < min_organizations:
        raise PrivacyThresholdViolation(
            f"{len(org_ids)} organizations, fewer than min_organizations={min_organizations}"
        )
    info(f"requesting site statistics from organizations {org_ids}")
    task = client.task.create(
        input_={"method": "partial", "kwargs": {"params": params}},
        organizations=org_ids,
        name="blina-study site statistics",
        description="sufficient statistics of the blina-study pooled analyses",
    )
    site_stats = client.wait_for_results(task_id=task.get("id"))
    if len(site_stats) < min_organizations:
        raise PrivacyThresholdViolation(
            f"only {len(site_stats)} sites returned statistics; need {min_organizations}"
        )
    info("pooling")
    pooled = pool_site_statistics(site_stats)
    if not include_per_site:
        pooled.pop("per_site")
    return pooled


COX_COVARIATES = ("high_mrd", "bcr_abl1", "poor_cytogenetics")


@data(2)
def partial_cox(
    course: pd.DataFrame,
    patient: pd.DataFrame,
    kind: str,
    covariates: list[str],
    beta: list[float] | None = None,
    grid: list[int] | None = None,
    ties: str = "efron",
    endpoint: str = "efs",
) -> dict[str, Any]:
    """One Cox round at this node. ``kind``: ``derivatives`` (site-stratified: loglik, score,
    information at ``beta``), ``setup`` (unstratified: event days with counts, sum of x over
    events, n) or ``risk_sums`` (unstratified: risk-set and tied-event sums at ``grid``)."""
    _check_min_patients(patient)
    site = _site_id(course, patient)
    if kind in ("setup", "risk_sums") and not get_env_var(
        "BLINA_COX_UNSTRATIFIED", "false", as_type="bool"
    ):
        # The unstratified rounds share event days and per-day risk-set sums (see
        # blina_study.analysis.federated.cox_rounds): the node administrator opts in, the default is no.
        raise PrivacyThresholdViolation(
            f"site {site}: this node does not take part in the unstratified Cox model (it reveals "
            "event days and per-day risk-set sums); set BLINA_COX_UNSTRATIFIED=true in the node's "
            "algorithm_env to allow it, or run model='stratified'"
        )
    try:
        design = cox_design(course, patient, covariates, endpoint=endpoint)
        if kind == "derivatives":
            out = site_cox_derivatives(design, beta or [], ties=ties)  # type: ignore[arg-type]
        elif kind == "setup":
            out = site_cox_setup(design)
        elif kind == "risk_sums":
            out = site_risk_set_sums(design, beta or [], grid or [], ties=ties)  # type: ignore[arg-type]
        else:
            raise AlgorithmError(f"unknown Cox round kind {kind!r}; valid: derivatives, setup, risk_sums")
    except ValueError as exc:  # FederatedInputError: a sentence naming the fix
        raise AlgorithmError(f"site {site}: {exc}") from None
    info(f"site {site}: Cox round {kind} over {design.time.size} complete cases")
    return out


@algorithm_client
def central_cox(
    client: Any,
    covariates: list[str] | None = None,
    model: str = "stratified",
    ties: str = "efron",
    endpoint: str = "efs",
    min_organizations: int = DEFAULT_MIN_ORGANIZATIONS,
) -> dict[str, Any]:
    """Cox PH over all organizations, one ``partial_cox`` subtask per Newton round; returns the
    fit (coef, se, HR with 95% CI, Wald P, loglik, LR/Wald/score tests, R's warnings) with
    ``model``, ``rounds`` (subtasks sent) and ``iterations``."""
    covariates = list(covariates or COX_COVARIATES)
    org_ids = [org["id"] for org in client.organization.list()]
    if len(org_ids) < min_organizations:
        raise PrivacyThresholdViolation(
            f"{len(org_ids)} organizations, fewer than min_organizations={min_organizations}"
        )

    def request(kind: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        task = client.task.create(
            input_={"method": "partial_cox",
                    "kwargs": {"kind": kind, "covariates": covariates, "ties": ties,
                               "endpoint": endpoint, **kwargs}},  # fmt: skip
            organizations=org_ids,
            name=f"blina-study Cox {model} ({kind})",
            description="one round of the federated Cox Newton iteration",
        )
        results = client.wait_for_results(task_id=task.get("id"))
        if len(results) != len(org_ids):
            raise AlgorithmError(f"{len(results)} of {len(org_ids)} organizations answered the Cox round")
        return results

    info(f"fitting the {model} Cox model over organizations {org_ids}")
    try:
        return federated_cox_fit(request, covariates, model=model, ties=ties)  # type: ignore[arg-type]
    except ValueError as exc:
        raise AlgorithmError(str(exc)) from None
