-- grain: one row per procedure occurrence
-- keys: procedure_occurrence_id
-- depends_on: cdm.procedure_occurrence
select
    ---------- ids
    p.procedure_occurrence_id,
    p.person_id,
    ---------- codes
    p.procedure_concept_id,
    p.procedure_source_concept_id,
    p.procedure_source_value,
    ---------- dates (procedure_end_date is v5.4 only: NULL on a v5.3 CDM)
    p.procedure_date,
    {v54(p.procedure_end_date, date)} as procedure_end_date
from {cdm}.procedure_occurrence as p
