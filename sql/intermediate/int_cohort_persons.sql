-- grain: one row per person with at least one blinatumomab exposure (the study population)
-- keys: person_id
-- depends_on: stg_drug_exposure, int_concept_sets, int_overlay_codes
-- The only persons a course or patient row can be about. The relations that read the large fact
-- tables (int_study_measurements, int_drug_exposures, int_study_conditions, int_study_procedures) keep
-- only these persons first (the in_cohort macro of adapter/views.py; PostgreSQL answers it with each
-- table's person_id index), so a hospital's whole MEASUREMENT table is never searched for study codes.
-- Blinatumomab is matched as in int_drug_exposures: standard set (with descendants), source set, or the
-- overlay's source values and local source concepts. Not derived from int_drug_exposures on purpose: that one labels every drug
-- variable of every person, and the input fingerprint (which needs only this relation) got 3x slower
-- on PostgreSQL at 1e5 persons when it did (0.44 s -> 1.28 s, extract 2.5x -> 3.4x the limit).
select distinct d.person_id
from stg_drug_exposure as d
where d.drug_concept_id in (
        select concept_id from int_concept_sets where variable = 'blinatumomab' and match_on = 'standard'
    )
    or d.drug_source_concept_id in (
        select concept_id from int_concept_sets where variable = 'blinatumomab' and match_on = 'source'
    )
    or d.drug_source_value in (
        select source_value from int_overlay_codes where variable = 'blinatumomab' and match_on = 'source_value'
    )
    or d.drug_source_concept_id in (
        select concept_id from int_overlay_codes where variable = 'blinatumomab' and match_on = 'source_concept'
    )
