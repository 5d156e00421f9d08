-- grain: one row per drug exposure
-- keys: drug_exposure_id
-- depends_on: cdm.drug_exposure
select
    ---------- ids
    d.drug_exposure_id,
    d.person_id,
    ---------- codes
    d.drug_concept_id,
    d.drug_source_concept_id,
    d.drug_source_value,
    ---------- dates (end is NOT NULL in v5.4; a single-day exposure has end = start)
    d.drug_exposure_start_date as start_date,
    coalesce(d.drug_exposure_end_date, d.drug_exposure_start_date) as end_date
from {cdm}.drug_exposure as d
