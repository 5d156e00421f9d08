-- grain: one row per (polarity, concept_id)
-- keys: polarity, concept_id
-- depends_on: study_value_sets, stg_concept
-- Categorical answers that mean a positive / negative result (value_as_concept_id).
select distinct
    v.polarity,
    c.concept_id
from study_value_sets as v
inner join stg_concept as c
    on c.vocabulary_id = v.vocabulary_id
    and c.concept_code = v.code
