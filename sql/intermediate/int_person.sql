-- grain: one row per person
-- keys: person_id
-- depends_on: stg_person, stg_concept
-- Sex from gender_concept_id's Gender code: M / F; another Gender concept -> 'other'; concept 0,
-- NULL, an unknown concept or one named 'UNKNOWN' -> 'unknown'.
select
    p.person_id,
    p.person_source_value,
    p.birth_date,
    case
        when g.concept_code = 'M' then 'M'
        when g.concept_code = 'F' then 'F'
        when g.concept_id is null or upper(g.concept_name) in ('UNKNOWN', 'NO MATCHING CONCEPT') then 'unknown'
        else 'other'
    end as sex
from stg_person as p
left join (
    select concept_id, concept_code, concept_name from stg_concept where vocabulary_id = 'Gender'
) as g
    on g.concept_id = p.gender_concept_id
    and p.gender_concept_id <> 0
