-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, int_drug_exposures, int_status_at, int_course_status, study_params
-- Rule 4: burden_reduction = chemotherapy administered in [index - burden_window_days, index) (an
--   administration period overlapping that window) while the status at the start of that
--   chemotherapy was R/R. The window ends the day before the first course, so a dexamethasone
--   premedication on course day 1 is not chemotherapy before it (3b.9).
-- Rule 5: status_at_referral = the status at the start of the burden-reduction chemotherapy (R/R by
--   definition) if there was any, else the pre-course status of course 1.
-- Rule 6: indication = 'R/R' if status_at_referral is R/R; 'CR-MRDpos' if it is CR-MRDpos and
--   chemotherapy was given (overlapping) in [index - delay_window_days, index); else 'chemo_delay'.
with

chemo_window as (
    select
        x.person_id,
        x.drug_exposure_id,
        x.start_date,
        x.end_date,
        i.index_date
    from int_drug_exposures as x
    inner join int_patient_index as i
        on i.person_id = x.person_id
    where x.variable = 'chemotherapy'
        and x.start_date < i.index_date
),

burden as (
    select
        w.person_id,
        min(w.start_date) as burden_start,
        min(w.drug_exposure_id) as burden_drug_exposure_id
    from chemo_window as w
    cross join study_params as p
    inner join int_status_at as s
        on s.person_id = w.person_id
        and s.status_date = w.start_date
        and s.mode = 'window'
    where w.end_date >= w.index_date - p.burden_window_days
        and s.status = 'R/R'
    group by w.person_id
),

delay_window as (
    select
        w.person_id,
        min(w.drug_exposure_id) as delay_drug_exposure_id
    from chemo_window as w
    cross join study_params as p
    where w.end_date >= w.index_date - p.delay_window_days
    group by w.person_id
),

referral as (
    select
        i.person_id,
        b.burden_start,
        b.burden_drug_exposure_id,
        d.delay_drug_exposure_id,
        b.person_id is not null as burden_reduction,
        case when b.person_id is not null then 'R/R' else c1.pre_status end as status_at_referral
    from int_patient_index as i
    inner join int_course_status as c1
        on c1.person_id = i.person_id
        and c1.course_number = 1
    left join burden as b
        on b.person_id = i.person_id
    left join delay_window as d
        on d.person_id = i.person_id
)

select
    r.person_id,
    r.burden_reduction,
    r.burden_start,
    r.burden_drug_exposure_id,
    r.status_at_referral,
    case
        when r.status_at_referral = 'R/R' then 'R/R'
        when r.status_at_referral = 'CR-MRDpos' and r.delay_drug_exposure_id is not null then 'CR-MRDpos'
        else 'chemo_delay'
    end as indication,
    r.delay_drug_exposure_id
from referral as r
