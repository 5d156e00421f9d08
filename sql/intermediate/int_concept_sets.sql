-- grain: one row per (variable, concept_id, match_on)
-- keys: variable, concept_id, match_on
-- depends_on: study_codes, stg_concept, stg_concept_ancestor
-- Code-set matching (docs/omop-conventions.md): match_on = 'standard' is matched against the
-- *_concept_id column (standard concepts of the code set, plus their descendants when the code asks
-- for them); match_on = 'source' is matched against *_source_concept_id (every concept of the set,
-- standard or not, so non-standard ICD-10-CM codes never go through a generic 'Maps to' target).
-- grade: the grade the code carries (CRS / ICANS), inherited by descendants.
-- The vocabulary is read by lookups per study code (lateral, 'offset 0' keeps PostgreSQL from
-- flattening them into joins), so a full OHDSI CONCEPT / CONCEPT_ANCESTOR is probed through its
-- indexes, never scanned.
with

coded as (
    select
        k.variable,
        k.descendants,
        k.grade,
        c.concept_id,
        c.standard_concept
    from study_codes as k
    cross join lateral (
        select x.concept_id, x.standard_concept
        from stg_concept as x
        where x.vocabulary_id = k.vocabulary_id
            and x.concept_code = k.code
        offset 0
    ) as c
    where k.code_kind = 'concept'
),

standard_set as (
    select variable, concept_id, grade
    from coded
    where standard_concept = 'S'
    union all
    select k.variable, d.descendant_concept_id as concept_id, k.grade
    from coded as k
    cross join lateral (
        select ca.descendant_concept_id
        from stg_concept_ancestor as ca
        where ca.ancestor_concept_id = k.concept_id
        offset 0
    ) as d
    where k.descendants and k.standard_concept = 'S'
)

select variable, concept_id, 'standard' as match_on, max(grade) as grade
from standard_set
group by variable, concept_id
union all
select variable, concept_id, 'source' as match_on, max(grade) as grade
from coded
group by variable, concept_id
