-- grain: one row per (person_id, status_date, mode) at which a disease status is needed
-- keys: person_id, status_date, mode
-- depends_on: int_courses, int_patient_index, int_course_response_dates, int_drug_exposures, int_assessments, study_params
-- mode 'window' (rule 2 with the status lookback): course starts (rule 3), starts of chemotherapy
--   given in the burden window (rule 4), assessment dates on or after index (rule 14: CR dates);
-- mode 'day' (rule 7): response dates, "the status from the results of that date alone".
select c.person_id, c.course_start as status_date, 'window' as mode
from int_courses as c
union
select x.person_id, x.start_date as status_date, 'window' as mode
from int_drug_exposures as x
cross join study_params as p
inner join int_patient_index as i
    on i.person_id = x.person_id
where x.variable = 'chemotherapy'
    and x.start_date < i.index_date
    and x.end_date >= i.index_date - p.burden_window_days
union
select a.person_id, a.assessment_date as status_date, 'window' as mode
from int_assessments as a
inner join int_patient_index as i
    on i.person_id = a.person_id
where a.assessment_date >= i.index_date
union
select r.person_id, r.response_date as status_date, 'day' as mode
from int_course_response_dates as r
