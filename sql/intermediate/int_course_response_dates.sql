-- grain: one row per course with a response assessment
-- keys: person_id, course_number
-- depends_on: int_courses, int_assessments, study_params
-- Rule 7: the response date is the first date in
-- [course_start + response_from_day, course_end + response_until_days] with a marrow-blast or MRD result.
select
    c.person_id,
    c.course_number,
    min(a.assessment_date) as response_date
from int_courses as c
cross join study_params as p
inner join int_assessments as a
    on a.person_id = c.person_id
    and a.assessment_date >= c.course_start + p.response_from_day
    and a.assessment_date <= c.course_end + p.response_until_days
group by c.person_id, c.course_number
