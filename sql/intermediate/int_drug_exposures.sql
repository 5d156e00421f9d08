-- grain: one row per (variable, drug_exposure_id)
-- keys: variable, drug_exposure_id
-- depends_on: stg_drug_exposure, int_concept_sets, int_overlay_codes, study_variables, int_cohort_persons
-- Drug exposures of a study variable (blinatumomab, chemotherapy, car_t products): drug_concept_id in
-- the standard set (ingredient roll-up through CONCEPT_ANCESTOR), or the source concept / overlay
-- source value. Variables of other domains that list a drug code (car_t: tisagenlecleucel) are
-- included. end_date is never before start_date (a reversed period counts as its start day).
with

drug_sets as (
    select s.variable, s.concept_id, s.match_on
    from int_concept_sets as s
),

overlay as (
    select o.variable, o.match_on, o.source_value, o.concept_id
    from int_overlay_codes as o
    inner join study_variables as v
        on v.variable = o.variable
    where v.domain = 'drug'
),

candidates as (
    select d.*
    from stg_drug_exposure as d
    where {in_cohort(d.person_id)}
        and (d.drug_concept_id in (select concept_id from drug_sets where match_on = 'standard')
            or d.drug_source_concept_id in (select concept_id from drug_sets where match_on = 'source')
            or d.drug_source_value in (select source_value from overlay where match_on = 'source_value')
            or d.drug_source_concept_id in (select concept_id from overlay where match_on = 'source_concept'))
),

labelled as (
    select s.variable, d.drug_exposure_id
    from candidates as d
    inner join drug_sets as s
        on s.match_on = 'standard' and s.concept_id = d.drug_concept_id
    union
    select s.variable, d.drug_exposure_id
    from candidates as d
    inner join drug_sets as s
        on s.match_on = 'source' and s.concept_id = d.drug_source_concept_id
    union
    select o.variable, d.drug_exposure_id
    from candidates as d
    inner join overlay as o
        on o.match_on = 'source_value' and o.source_value = d.drug_source_value
    union
    select o.variable, d.drug_exposure_id
    from candidates as d
    inner join overlay as o
        on o.match_on = 'source_concept' and o.concept_id = d.drug_source_concept_id
)

select
    l.variable,
    d.drug_exposure_id,
    d.person_id,
    d.start_date,
    case when d.end_date < d.start_date then d.start_date else d.end_date end as end_date
from labelled as l
inner join candidates as d
    on d.drug_exposure_id = l.drug_exposure_id
