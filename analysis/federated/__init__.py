"""Exact federated pooling: per-site sufficient statistics and the coordinator's pooling.

Sites run ``site_statistics(course, patient, site_id=...)``; the coordinator runs
``pool_site_statistics([...])``. The pooled result equals the centralized analysis of the
concatenated patients (see tests/test_federated_*.py for the checks against lifelines,
scipy and statsmodels).
"""

from .pooling import (
    PoolingError,
    cmh_exact_pvalue,
    pool_counts,
    pool_cox,
    pool_km,
    pool_logrank,
    pool_median_range,
    pool_site_statistics,
    pool_stratified_logrank,
    pool_table2x2,
    pool_wilcoxon,
)
from .sufficient import (
    COORDINATOR_ONLY,
    FORMAT_VERSION,
    PUBLISHABLE,
    FederatedInputError,
    FederatedParams,
    site_statistics,
)

__all__ = [
    "COORDINATOR_ONLY",
    "FORMAT_VERSION",
    "PUBLISHABLE",
    "FederatedInputError",
    "FederatedParams",
    "PoolingError",
    "cmh_exact_pvalue",
    "pool_counts",
    "pool_cox",
    "pool_km",
    "pool_logrank",
    "pool_median_range",
    "pool_site_statistics",
    "pool_stratified_logrank",
    "pool_table2x2",
    "pool_wilcoxon",
    "site_statistics",
]
