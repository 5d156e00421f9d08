-- grain: one row per (course, T-cell variable)
-- keys: person_id, course_number, variable
-- depends_on: int_courses, int_measurement_values, study_params
-- Rule 10 for cd3_abs, cd4_abs, cd8_abs (10^9/L):
--   pre = the latest value in [course_start - tcell_pre_window_days, course_start];
--   post = the value closest to course_end in [course_end - w, course_end + w], a tie going to the
--   earlier value. Several values on the chosen day: the highest (the oracle's reading).
with

candidates as (
    select
        c.person_id,
        c.course_number,
        c.course_start,
        c.course_end,
        v.variable,
        v.measurement_date,
        v.measurement_id,
        v.value
    from int_courses as c
    inner join int_measurement_values as v
        on v.person_id = c.person_id
        and v.variable in ('cd3_abs', 'cd4_abs', 'cd8_abs')
        and v.value_status = 'ok'
),

pre as (
    select
        x.*,
        row_number() over (
            partition by x.person_id, x.course_number, x.variable
            order by x.measurement_date desc, x.value desc, x.measurement_id
        ) as rn
    from candidates as x
    cross join study_params as p
    where x.measurement_date >= x.course_start - p.tcell_pre_window_days
        and x.measurement_date <= x.course_start
),

post as (
    select
        x.*,
        row_number() over (
            partition by x.person_id, x.course_number, x.variable
            order by
                case when x.measurement_date >= x.course_end
                    then x.measurement_date - x.course_end
                    else x.course_end - x.measurement_date
                end,
                x.measurement_date,
                x.value desc,
                x.measurement_id
        ) as rn
    from candidates as x
    cross join study_params as p
    where x.measurement_date >= x.course_end - p.tcell_post_window_days
        and x.measurement_date <= x.course_end + p.tcell_post_window_days
),

keys as (
    select distinct person_id, course_number, variable from pre where rn = 1
    union
    select distinct person_id, course_number, variable from post where rn = 1
)

select
    k.person_id,
    k.course_number,
    k.variable,
    a.value as pre_value,
    a.measurement_id as pre_measurement_id,
    b.value as post_value,
    b.measurement_id as post_measurement_id
from keys as k
left join pre as a
    on a.person_id = k.person_id
    and a.course_number = k.course_number
    and a.variable = k.variable
    and a.rn = 1
left join post as b
    on b.person_id = k.person_id
    and b.course_number = k.course_number
    and b.variable = k.variable
    and b.rn = 1
