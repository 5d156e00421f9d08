"""vantage6 algorithm for the blina-study pooled analyses (exact, one round).

* ``partial`` runs at each node on two databases, the site's ``course`` and ``patient`` tables
  (study-protocol section 4, in that order), and returns that site's sufficient statistics
  (``analysis.federated.site_statistics``). They are the *coordinator-only* pooling inputs:
  unsuppressed, so the pooled result is exact. Before returning, the node scans them for
  person-level field names, dates and its own source ids, and refuses to return them if any
  is found, or if the site has fewer than ``BLINA_MIN_PATIENTS`` patients (node setting via
  ``algorithm_env``, default 5).
* ``central`` sends ``partial`` to every organization of the collaboration, waits for the
  statistics and pools them (``analysis.federated.pool_site_statistics``): KM, log-rank and
  site-stratified log-rank, Fisher + CMH, site-stratified Cox (Efron), pooled Wilcoxon and the
  count tables. It refuses to pool fewer than ``min_organizations`` sites (default 3), so no
  site can difference the pooled result against its own data.

The math lives in blina-study (``analysis.federated``), installed next to this package; this
module only adapts it to vantage6's decorators.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from vantage6.algorithm.tools.decorators import algorithm_client, data
from vantage6.algorithm.tools.exceptions import AlgorithmError, PrivacyThresholdViolation
from vantage6.algorithm.tools.util import get_env_var, info

from analysis.federated import (
    FederatedParams,
    pool_site_statistics,
    scan_statistics,
    site_statistics,
)

__all__ = ["central", "partial"]

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


@data(2)
def partial(
    course: pd.DataFrame, patient: pd.DataFrame, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One site's sufficient statistics (JSON) from its course and patient tables."""
    # Node administrators set this in the node's algorithm_env (vantage6 encodes the value).
    min_patients = get_env_var("BLINA_MIN_PATIENTS", str(DEFAULT_MIN_PATIENTS), as_type="int")
    if len(patient) < min_patients:
        raise PrivacyThresholdViolation(
            f"this site has {len(patient)} patients, fewer than the node's minimum "
            f"{min_patients} (BLINA_MIN_PATIENTS); refusing to share statistics"
        )
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
