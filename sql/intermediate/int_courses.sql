-- grain: one row per course
-- keys: person_id, course_number
-- depends_on: int_course_exposures
-- Rule 1: course_start = first infusion day, course_end = last infusion day, infusion_days = calendar
-- dates touched by any administration period of the course, ends included (3b.2). Days are counted
-- by merging overlapping periods (islands), so no calendar expansion is needed.
with

ordered as (
    select
        e.*,
        max(e.end_date) over (
            partition by e.person_id, e.course_number
            order by e.start_date, e.end_date, e.drug_exposure_id
            rows between unbounded preceding and 1 preceding
        ) as latest_end_before
    from int_course_exposures as e
),

islands as (
    select
        o.*,
        sum(case when o.latest_end_before is null or o.start_date > o.latest_end_before then 1 else 0 end)
            over (
                partition by o.person_id, o.course_number
                order by o.start_date, o.end_date, o.drug_exposure_id
                rows between unbounded preceding and current row
            ) as island
    from ordered as o
),

island_days as (
    select
        person_id,
        course_number,
        max(end_date) - min(start_date) + 1 as days
    from islands
    group by person_id, course_number, island
),

days as (
    select person_id, course_number, sum(days) as infusion_days
    from island_days
    group by person_id, course_number
)

select
    e.person_id,
    e.course_number,
    min(e.start_date) as course_start,
    max(e.end_date) as course_end,
    cast(max(d.infusion_days) as integer) as infusion_days,
    count(*) as n_exposures
from int_course_exposures as e
inner join days as d
    on d.person_id = e.person_id
    and d.course_number = e.course_number
group by e.person_id, e.course_number
