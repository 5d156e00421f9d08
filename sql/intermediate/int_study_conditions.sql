-- grain: one row per (variable, condition_occurrence_id)
-- keys: variable, condition_occurrence_id
-- depends_on: stg_condition_occurrence, int_concept_sets, int_overlay_codes, study_variables, int_cohort_persons
-- Conditions of a study variable (relapse, crs, icans, b_all_diagnosis), matched like measurements.
-- grade (3b.8) comes from the matched code (study.yaml or overlay); ungraded codes give NULL.
with

cond_sets as (
    select s.variable, s.concept_id, s.match_on, s.grade
    from int_concept_sets as s
    inner join study_variables as v
        on v.variable = s.variable
    where v.domain = 'condition'
),

overlay as (
    select o.variable, o.match_on, o.source_value, o.concept_id, o.grade
    from int_overlay_codes as o
    inner join study_variables as v
        on v.variable = o.variable
    where v.domain = 'condition'
),

candidates as (
    select c.*
    from stg_condition_occurrence as c
    where {in_cohort(c.person_id)}
        and (c.condition_concept_id in (select concept_id from cond_sets where match_on = 'standard')
            or c.condition_source_concept_id in (select concept_id from cond_sets where match_on = 'source')
            or c.condition_source_value in (select source_value from overlay where match_on = 'source_value')
            or c.condition_source_concept_id in (select concept_id from overlay where match_on = 'source_concept'))
),

labelled as (
    select s.variable, c.condition_occurrence_id, s.grade
    from candidates as c
    inner join cond_sets as s
        on s.match_on = 'standard' and s.concept_id = c.condition_concept_id
    union all
    select s.variable, c.condition_occurrence_id, s.grade
    from candidates as c
    inner join cond_sets as s
        on s.match_on = 'source' and s.concept_id = c.condition_source_concept_id
    union all
    select o.variable, c.condition_occurrence_id, o.grade
    from candidates as c
    inner join overlay as o
        on o.match_on = 'source_value' and o.source_value = c.condition_source_value
    union all
    select o.variable, c.condition_occurrence_id, o.grade
    from candidates as c
    inner join overlay as o
        on o.match_on = 'source_concept' and o.concept_id = c.condition_source_concept_id
),

graded as (
    select variable, condition_occurrence_id, max(grade) as grade
    from labelled
    group by variable, condition_occurrence_id
)

select
    g.variable,
    c.condition_occurrence_id,
    c.person_id,
    c.condition_start_date as condition_date,
    g.grade
from graded as g
inner join candidates as c
    on c.condition_occurrence_id = g.condition_occurrence_id
