-- grain: one row per visit
-- keys: visit_occurrence_id
-- depends_on: cdm.visit_occurrence
-- Read for follow-up only (3b.10: encounters count).
select
    v.visit_occurrence_id,
    v.person_id,
    v.visit_start_date,
    v.visit_end_date
from {cdm}.visit_occurrence as v
