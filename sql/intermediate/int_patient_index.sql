-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_courses
-- index_date = first course_start; last_course_end feeds rule 12.
select
    person_id,
    min(course_start) as index_date,
    cast(count(*) as integer) as n_courses,
    max(course_end) as last_course_end
from int_courses
group by person_id
