-- grain: one row per (course, cytokine variable) with a value in the window
-- keys: person_id, course_number, variable
-- depends_on: int_courses, int_measurement_values, study_params
-- Rule 10: cytokine peak = the maximum of il6, il10, ifng, tnfa (pg/mL) in
-- [course_start, course_end + cytokine_peak_after_days]; peak_measurement_id is the row that gave it.
with

ranked as (
    select
        c.person_id,
        c.course_number,
        v.variable,
        v.value,
        v.measurement_id,
        row_number() over (
            partition by c.person_id, c.course_number, v.variable
            order by v.value desc, v.measurement_date, v.measurement_id
        ) as rn
    from int_courses as c
    cross join study_params as p
    inner join int_measurement_values as v
        on v.person_id = c.person_id
        and v.variable in ('il6', 'il10', 'ifng', 'tnfa')
        and v.value_status = 'ok'
        and v.measurement_date >= c.course_start
        and v.measurement_date <= c.course_end + p.cytokine_peak_after_days
)

select
    person_id,
    course_number,
    variable,
    value as peak_value,
    measurement_id as peak_measurement_id
from ranked
where rn = 1
