-- grain: one row per (variable, match_on, source_value or concept_id) of the site overlay
-- keys: variable, match_on, source_value, concept_id
-- depends_on: study_codes, stg_concept
-- The site overlay's entries (mappings/README.md), resolved for matching. match_on = 'source_value':
-- the row's *_source_value equals source_value. match_on = 'source_concept': the row's
-- *_source_concept_id is the concept the entry's (vocabulary_id, concept_code) names in this database's
-- CONCEPT (a hospital's local concept, usually above 2,000,000,000); resolved here at run time, never
-- written as an id. An entry whose pair is not in CONCEPT resolves to nothing (blina check says so).
-- unit: the unit the site reports the variable in (used when the row's unit_concept_id is 0).
select
    k.variable,
    'source_value' as match_on,
    k.code as source_value,
    cast(null as bigint) as concept_id,
    k.grade,
    k.unit
from study_codes as k
where k.code_kind = 'source_value'
union all
select
    k.variable,
    'source_concept' as match_on,
    cast(null as varchar(50)) as source_value,
    cast(c.concept_id as bigint) as concept_id,
    k.grade,
    k.unit
from study_codes as k
cross join lateral (
    select x.concept_id
    from stg_concept as x
    where x.vocabulary_id = k.vocabulary_id
        and x.concept_code = k.code
    offset 0
) as c
where k.code_kind = 'source_concept'
