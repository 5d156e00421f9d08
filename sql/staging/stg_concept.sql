-- grain: one row per concept
-- keys: concept_id
-- depends_on: vocab.concept
select
    c.concept_id,
    c.concept_name,
    c.domain_id,
    c.vocabulary_id,
    c.concept_code,
    c.standard_concept
from {vocab}.concept as c
