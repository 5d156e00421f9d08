-- grain: one row per condition occurrence
-- keys: condition_occurrence_id
-- depends_on: cdm.condition_occurrence
select
    ---------- ids
    c.condition_occurrence_id,
    c.person_id,
    ---------- codes
    c.condition_concept_id,
    c.condition_source_concept_id,
    c.condition_source_value,
    ---------- dates
    c.condition_start_date,
    c.condition_end_date
from {cdm}.condition_occurrence as c
