"""Exact federated pooling: per-site sufficient statistics and the coordinator's pooling.

Sites run ``site_statistics(course, patient, site_id=...)`` (or ``build_site_package`` to
write the zip they send); the coordinator runs ``pool_site_statistics([...])`` (or
``pool_packages([...])``). The pooled result equals the centralized analysis of the
concatenated patients (see tests/test_federated_*.py for the checks against lifelines,
scipy and statsmodels).
"""

from .package import (
    PackageError,
    PooledResults,
    ScanFinding,
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
    "COORDINATOR_ONLY",
    "FORMAT_VERSION",
    "PUBLISHABLE",
    "FederatedInputError",
    "FederatedParams",
    "PackageError",
    "PoolingError",
    "PooledResults",
    "ScanFinding",
    "build_site_package",
    "cmh_exact_pvalue",
    "pool_counts",
    "pool_cox",
    "pool_km",
    "pool_logrank",
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
