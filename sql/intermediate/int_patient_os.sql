-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, int_patient_followup, stg_death
-- Rule 15, overall survival from index_date: event = death (any cause, earliest record); censored at
-- last_followup; os_days = event or censoring date minus index_date.
with

death as (
    select person_id, min(death_date) as death_date
    from stg_death
    group by person_id
)

select
    i.person_id,
    fu.last_followup,
    d.death_date,
    d.death_date is not null as os_event,
    cast(coalesce(d.death_date, fu.last_followup) - i.index_date as integer) as os_days
from int_patient_index as i
left join int_patient_followup as fu
    on fu.person_id = i.person_id
left join death as d
    on d.person_id = i.person_id
