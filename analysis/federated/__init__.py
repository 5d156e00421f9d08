"""Federated pooling: per-site statistics, site packages and the coordinator's pooling.

Sites run ``site_statistics(course, patient, site_id=...)`` (or ``build_site_package`` to
write the zip they send, at the ``aggregate`` or ``exact`` sharing level, optionally signed with
the site's Ed25519 key, ``signing``); the coordinator runs ``pool_site_statistics([...])`` or
``pool_packages([...], keys=...)``. At the exact level the pooled result equals the centralized
analysis of the concatenated patients to 1e-9 (tests/test_federated_exact_equals_central.py); at
the aggregate level it is a labelled meta-analysis with stratified tests from site totals
(``meta``; tests/test_federated_aggregate.py). docs/federated.md states what each level discloses.
"""

from .meta import pool_aggregate
from .package import (
    SHARING_LEVELS,
    PackageError,
    PooledResults,
    ScanFinding,
    aggregate_problems,
    build_site_package,
    pool_packages,
    read_package,
    scan_package,
    scan_statistics,
    suppress_counts,
)
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
    "SHARING_LEVELS",
    "COORDINATOR_ONLY",
    "FORMAT_VERSION",
    "PUBLISHABLE",
    "FederatedInputError",
    "FederatedParams",
    "PackageError",
    "PoolingError",
    "PooledResults",
    "ScanFinding",
    "aggregate_problems",
    "build_site_package",
    "cmh_exact_pvalue",
    "pool_counts",
    "pool_cox",
    "pool_km",
    "pool_logrank",
    "pool_aggregate",
    "pool_packages",
    "pool_median_range",
    "pool_site_statistics",
    "pool_stratified_logrank",
    "pool_table2x2",
    "pool_wilcoxon",
    "read_package",
    "scan_package",
    "scan_statistics",
    "site_statistics",
    "suppress_counts",
]
