-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, stg_observation_period, stg_death, stg_condition_occurrence, stg_drug_exposure, stg_measurement, stg_observation, stg_procedure_occurrence, stg_visit_occurrence
-- Rule 13 / 3b.10: last_followup = the latest date of any record of the patient, study-relevant or
-- not: observation period end, death, and every fact date (start and end dates). One correlated
-- subquery per table: PostgreSQL answers each with the person_id index for the (few) study patients
-- instead of reading whole fact tables; DuckDB turns them into joins. greatest() skips NULLs.
select
    i.person_id,
    greatest(
        (select max(x.observation_period_end_date) from stg_observation_period as x
            where x.person_id = i.person_id),
        (select max(x.death_date) from stg_death as x
            where x.person_id = i.person_id),
        (select max(greatest(x.condition_start_date, x.condition_end_date)) from stg_condition_occurrence as x
            where x.person_id = i.person_id),
        (select max(greatest(x.start_date, x.end_date)) from stg_drug_exposure as x
            where x.person_id = i.person_id),
        (select max(x.measurement_date) from stg_measurement as x
            where x.person_id = i.person_id),
        (select max(x.observation_date) from stg_observation as x
            where x.person_id = i.person_id),
        (select max(greatest(x.procedure_date, x.procedure_end_date)) from stg_procedure_occurrence as x
            where x.person_id = i.person_id),
        (select max(greatest(x.visit_start_date, x.visit_end_date)) from stg_visit_occurrence as x
            where x.person_id = i.person_id)
    ) as last_followup
from int_patient_index as i
