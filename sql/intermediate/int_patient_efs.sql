-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, int_course_status, int_status_at, int_assessments, int_study_conditions, int_patient_followup, stg_death
-- Rule 14, event-free survival from index_date; the first of:
--   non_response: course 1 pre-status R/R and its cr is FALSE (event at day 0; cr NULL is no event);
--   relapse: the first date after index with R/R evidence (a blast result >= threshold, or a relapse
--     record) that follows (strictly later) a date with a CR status: the rule-2 status at a
--     blast / MRD result date on or after index, or index itself for a patient in CR at index;
--     an MRD rise alone is not a relapse;
--   death from any cause.
-- Same-day ties: non_response, then relapse, then death. Censored at last_followup.
with

cr_dates as (
    select s.person_id, s.status_date as cr_date
    from int_status_at as s
    inner join int_assessments as a
        on a.person_id = s.person_id
        and a.assessment_date = s.status_date
    inner join int_patient_index as i
        on i.person_id = s.person_id
    where s.mode = 'window'
        and s.status_date >= i.index_date
        and s.status in ('CR-MRDpos', 'CR-MRDneg')
    union all
    select c1.person_id, c1.course_start
    from int_course_status as c1
    where c1.course_number = 1
        and c1.pre_status in ('CR-MRDpos', 'CR-MRDneg')
),

first_cr as (
    select person_id, min(cr_date) as first_cr_date
    from cr_dates
    group by person_id
),

rr_evidence as (
    select
        a.person_id,
        a.assessment_date as event_date,
        'measurement:' || cast(a.blasts_measurement_id as varchar(20)) as source
    from int_assessments as a
    where a.blasts_rr
    union all
    select
        r.person_id,
        r.condition_date as event_date,
        'condition_occurrence:' || cast(r.condition_occurrence_id as varchar(20)) as source
    from int_study_conditions as r
    where r.variable = 'relapse'
),

relapse as (
    select
        e.person_id,
        e.event_date,
        e.source,
        row_number() over (partition by e.person_id order by e.event_date, e.source) as rn
    from rr_evidence as e
    inner join first_cr as f
        on f.person_id = e.person_id
    inner join int_patient_index as i
        on i.person_id = e.person_id
    where e.event_date > i.index_date
        and e.event_date > f.first_cr_date
),

death as (
    select person_id, min(death_date) as death_date
    from stg_death
    group by person_id
),

events as (
    select
        i.person_id,
        i.index_date,
        fu.last_followup,
        d.death_date,
        case when c1.pre_status = 'R/R' and c1.cr = false then i.index_date end as non_response_date,
        r.event_date as relapse_date,
        r.source as relapse_source
    from int_patient_index as i
    inner join int_course_status as c1
        on c1.person_id = i.person_id
        and c1.course_number = 1
    left join int_patient_followup as fu
        on fu.person_id = i.person_id
    left join relapse as r
        on r.person_id = i.person_id
        and r.rn = 1
    left join death as d
        on d.person_id = i.person_id
)

select
    person_id,
    relapse_source,
    case
        when non_response_date is not null then 'non_response'
        when relapse_date is not null and (death_date is null or relapse_date <= death_date) then 'relapse'
        when death_date is not null then 'death'
    end as efs_event_type,
    cast(
        coalesce(non_response_date, least(relapse_date, death_date), last_followup) - index_date
        as integer
    ) as efs_days
from events
