-- grain: one row per (ancestor, descendant) concept pair
-- keys: ancestor_concept_id, descendant_concept_id
-- depends_on: vocab.concept_ancestor
select
    ca.ancestor_concept_id,
    ca.descendant_concept_id
from {vocab}.concept_ancestor as ca
