-- grain: one row per (variable, concept_id, match_on)
-- keys: variable, concept_id, match_on
-- depends_on: study_codes, stg_concept, stg_concept_ancestor
-- Code-set matching (docs/omop-conventions.md): match_on = 'standard' is matched against the
-- *_concept_id column (standard concepts of the code set, plus their descendants when the code asks
-- for them); match_on = 'source' is matched against *_source_concept_id (every concept of the set,
-- standard or not, so non-standard ICD-10-CM codes never go through a generic 'Maps to' target).
-- grade: the grade the code carries (CRS / ICANS), inherited by descendants.
with

coded as (
    select
        k.variable,
        k.descendants,
        k.grade,
        c.concept_id,
        c.standard_concept
    from study_codes as k
    inner join stg_concept as c
        on c.vocabulary_id = k.vocabulary_id
        and c.concept_code = k.code
    where k.code_kind = 'concept'
),

standard_set as (
    select variable, concept_id, grade
    from coded
    where standard_concept = 'S'
    union all
    select k.variable, ca.descendant_concept_id as concept_id, k.grade
    from coded as k
    inner join stg_concept_ancestor as ca
        on ca.ancestor_concept_id = k.concept_id
    where k.descendants and k.standard_concept = 'S'
)

select variable, concept_id, 'standard' as match_on, max(grade) as grade
from standard_set
group by variable, concept_id
union all
select variable, concept_id, 'source' as match_on, max(grade) as grade
from coded
group by variable, concept_id
