-- grain: one row per (course, variable) for crs / icans with a graded record during the course
-- keys: person_id, course_number, variable
-- depends_on: int_courses, int_study_conditions
-- 3b.8: CRS / ICANS during the course = condition dated in [course_start, course_end]; the grade comes
-- from the code; ungraded codes give no grade (they are not counted as grade 0).
with

ranked as (
    select
        c.person_id,
        c.course_number,
        x.variable,
        x.grade,
        x.condition_occurrence_id,
        row_number() over (
            partition by c.person_id, c.course_number, x.variable
            order by x.grade desc, x.condition_date, x.condition_occurrence_id
        ) as rn
    from int_courses as c
    inner join int_study_conditions as x
        on x.person_id = c.person_id
        and x.variable in ('crs', 'icans')
        and x.grade is not null
        and x.condition_date >= c.course_start
        and x.condition_date <= c.course_end
)

select
    person_id,
    course_number,
    variable,
    cast(grade as integer) as max_grade,
    condition_occurrence_id
from ranked
where rn = 1
