-- grain: one row per blinatumomab drug exposure
-- keys: person_id, drug_exposure_id
-- depends_on: int_drug_exposures, study_params
-- Rule 1 (3b.2): administrations ordered by start; the gap is the next start minus the latest end so
-- far; a gap > course_gap_days starts a new course. course_number counts 1..n per person.
with

ordered as (
    select
        e.person_id,
        e.drug_exposure_id,
        e.start_date,
        e.end_date,
        max(e.end_date) over (
            partition by e.person_id
            order by e.start_date, e.end_date, e.drug_exposure_id
            rows between unbounded preceding and 1 preceding
        ) as latest_end_before
    from int_drug_exposures as e
    where e.variable = 'blinatumomab'
),

flagged as (
    select
        o.*,
        case
            when o.latest_end_before is null then 1
            when o.start_date - o.latest_end_before > p.course_gap_days then 1
            else 0
        end as starts_course
    from ordered as o
    cross join study_params as p
)

select
    person_id,
    drug_exposure_id,
    start_date,
    end_date,
    cast(sum(starts_course) over (
        partition by person_id
        order by start_date, end_date, drug_exposure_id
        rows between unbounded preceding and current row
    ) as integer) as course_number
from flagged
