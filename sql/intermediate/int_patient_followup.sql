-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, stg_observation_period, stg_death, stg_condition_occurrence, stg_drug_exposure, stg_measurement, stg_observation, stg_procedure_occurrence, stg_visit_occurrence
-- Rule 13 / 3b.10: last_followup = the latest date of any record of the patient, study-relevant or
-- not: observation period end, death, and every fact date (end dates included). Each table is joined
-- to the cohort separately so an index on person_id can serve it.
with

dates as (
    select i.person_id, x.observation_period_end_date as d
    from int_patient_index as i
    inner join stg_observation_period as x on x.person_id = i.person_id
    union all
    select i.person_id, x.death_date
    from int_patient_index as i
    inner join stg_death as x on x.person_id = i.person_id
    union all
    select i.person_id, coalesce(x.condition_end_date, x.condition_start_date)
    from int_patient_index as i
    inner join stg_condition_occurrence as x on x.person_id = i.person_id
    union all
    select i.person_id, x.condition_start_date
    from int_patient_index as i
    inner join stg_condition_occurrence as x on x.person_id = i.person_id
    union all
    select i.person_id, x.end_date
    from int_patient_index as i
    inner join stg_drug_exposure as x on x.person_id = i.person_id
    union all
    select i.person_id, x.measurement_date
    from int_patient_index as i
    inner join stg_measurement as x on x.person_id = i.person_id
    union all
    select i.person_id, x.observation_date
    from int_patient_index as i
    inner join stg_observation as x on x.person_id = i.person_id
    union all
    select i.person_id, coalesce(x.procedure_end_date, x.procedure_date)
    from int_patient_index as i
    inner join stg_procedure_occurrence as x on x.person_id = i.person_id
    union all
    select i.person_id, x.procedure_date
    from int_patient_index as i
    inner join stg_procedure_occurrence as x on x.person_id = i.person_id
    union all
    select i.person_id, coalesce(x.visit_end_date, x.visit_start_date)
    from int_patient_index as i
    inner join stg_visit_occurrence as x on x.person_id = i.person_id
    union all
    select i.person_id, x.visit_start_date
    from int_patient_index as i
    inner join stg_visit_occurrence as x on x.person_id = i.person_id
)

select
    person_id,
    max(d) as last_followup
from dates
group by person_id
