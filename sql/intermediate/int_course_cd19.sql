-- grain: one row per course
-- keys: person_id, course_number
-- depends_on: int_courses, int_measurement_values, study_params
-- Rule 9: cd19_loss = the latest CD19+ count in [course_start - cd19_window_days, course_start] is
-- < cd19_loss_threshold (10^9/L), or a CD19-negative blast finding is recorded on or before
-- course_start (the window of the protocol's sentence binds the count only). FALSE when there is a
-- count or a finding result and neither holds; NULL when there is neither.
with

counts as (
    select
        c.person_id,
        c.course_number,
        v.value,
        v.measurement_id,
        row_number() over (
            partition by c.person_id, c.course_number
            order by v.measurement_date desc, v.value, v.measurement_id
        ) as rn
    from int_courses as c
    cross join study_params as p
    inner join int_measurement_values as v
        on v.person_id = c.person_id
        and v.variable = 'cd19_abs'
        and v.value_status = 'ok'
        and v.measurement_date >= c.course_start - p.cd19_window_days
        and v.measurement_date <= c.course_start
),

findings as (
    select
        c.person_id,
        c.course_number,
        min(case when v.is_positive then v.measurement_id end) as finding_measurement_id,
        count(*) as n_findings
    from int_courses as c
    inner join int_measurement_values as v
        on v.person_id = c.person_id
        and v.variable = 'cd19_negative_blasts'
        and v.is_positive is not null
        and v.measurement_date <= c.course_start
    group by c.person_id, c.course_number
)

select
    c.person_id,
    c.course_number,
    case
        when f.finding_measurement_id is not null then true
        when k.value is not null then k.value < p.cd19_loss_threshold
        when f.n_findings > 0 then false
    end as cd19_loss,
    k.measurement_id as cd19_measurement_id,
    f.finding_measurement_id
from int_courses as c
cross join study_params as p
left join counts as k
    on k.person_id = c.person_id
    and k.course_number = c.course_number
    and k.rn = 1
left join findings as f
    on f.person_id = c.person_id
    and f.course_number = c.course_number
