-- grain: one row per operator concept
-- keys: concept_id
-- depends_on: stg_concept
-- operator_concept_id -> comparator symbol, resolved by concept_name in domain 'Meas Value Operator'
-- (no concept_id is written anywhere). A measurement without an operator means '='.
select
    c.concept_id,
    c.concept_name as operator
from stg_concept as c
where c.domain_id = 'Meas Value Operator'
    and c.concept_name in ('<', '<=', '=', '>=', '>')
