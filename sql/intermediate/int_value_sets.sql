-- grain: one row per (polarity, concept_id)
-- keys: polarity, concept_id
-- depends_on: study_value_sets, stg_concept
-- Categorical answers that mean a positive / negative result (value_as_concept_id). Looked up per
-- code (see int_concept_sets).
select distinct
    v.polarity,
    c.concept_id
from study_value_sets as v
cross join lateral (
    select x.concept_id
    from stg_concept as x
    where x.vocabulary_id = v.vocabulary_id
        and x.concept_code = v.code
    offset 0
) as c
