-- grain: one row per (variable, procedure_occurrence_id)
-- keys: variable, procedure_occurrence_id
-- depends_on: stg_procedure_occurrence, int_concept_sets, int_overlay_codes, study_variables, int_cohort_persons
-- Procedures of a study variable (hsct, car_t), matched like measurements.
with

proc_sets as (
    select s.variable, s.concept_id, s.match_on
    from int_concept_sets as s
    inner join study_variables as v
        on v.variable = s.variable
    where v.domain = 'procedure'
),

overlay as (
    select o.variable, o.match_on, o.source_value, o.concept_id
    from int_overlay_codes as o
    inner join study_variables as v
        on v.variable = o.variable
    where v.domain = 'procedure'
),

candidates as (
    select p.*
    from stg_procedure_occurrence as p
    where {in_cohort(p.person_id)}
        and (p.procedure_concept_id in (select concept_id from proc_sets where match_on = 'standard')
            or p.procedure_source_concept_id in (select concept_id from proc_sets where match_on = 'source')
            or p.procedure_source_value in (select source_value from overlay where match_on = 'source_value')
            or p.procedure_source_concept_id in (select concept_id from overlay where match_on = 'source_concept'))
),

labelled as (
    select s.variable, p.procedure_occurrence_id
    from candidates as p
    inner join proc_sets as s
        on s.match_on = 'standard' and s.concept_id = p.procedure_concept_id
    union
    select s.variable, p.procedure_occurrence_id
    from candidates as p
    inner join proc_sets as s
        on s.match_on = 'source' and s.concept_id = p.procedure_source_concept_id
    union
    select o.variable, p.procedure_occurrence_id
    from candidates as p
    inner join overlay as o
        on o.match_on = 'source_value' and o.source_value = p.procedure_source_value
    union
    select o.variable, p.procedure_occurrence_id
    from candidates as p
    inner join overlay as o
        on o.match_on = 'source_concept' and o.concept_id = p.procedure_source_concept_id
)

select
    l.variable,
    p.procedure_occurrence_id,
    p.person_id,
    p.procedure_date
from labelled as l
inner join candidates as p
    on p.procedure_occurrence_id = l.procedure_occurrence_id
