-- grain: one row per (variable, measurement_id)
-- keys: variable, measurement_id
-- depends_on: stg_measurement, int_concept_sets, int_overlay_codes, study_variables, int_cohort_persons
-- Measurements that belong to a study variable: measurement_concept_id in the standard set, or
-- measurement_source_concept_id in the source set, or (site overlay, int_overlay_codes)
-- measurement_source_value equal to one of the overlay's source values or measurement_source_concept_id
-- equal to one of its resolved local source concepts. Only the study patients' rows are read (int_cohort_persons); the
-- three tests are OR-ed semi-joins, then the (small) candidate set is labelled. A concept match wins
-- over an overlay match (its unit comes from the row, not from the overlay).
with

meas_sets as (
    select s.variable, s.concept_id, s.match_on
    from int_concept_sets as s
    inner join study_variables as v
        on v.variable = s.variable
    where v.domain = 'measurement'
),

overlay as (
    select o.variable, o.match_on, o.source_value, o.concept_id, o.unit
    from int_overlay_codes as o
    inner join study_variables as v
        on v.variable = o.variable
    where v.domain = 'measurement'
),

candidates as (
    select m.*
    from stg_measurement as m
    where {in_cohort(m.person_id)}
        and (m.measurement_concept_id in (select concept_id from meas_sets where match_on = 'standard')
            or m.measurement_source_concept_id in (select concept_id from meas_sets where match_on = 'source')
            or m.measurement_source_value in (select source_value from overlay where match_on = 'source_value')
            or m.measurement_source_concept_id in (select concept_id from overlay where match_on = 'source_concept'))
),

labelled as (
    -- a concept match (standard or source) and an overlay match of the same row and variable: the
    -- concept match wins (priority 1); duplicates are folded by the group by below
    select s.variable, m.measurement_id, 1 as priority, cast(null as varchar(50)) as overlay_unit
    from candidates as m
    inner join meas_sets as s
        on s.match_on = 'standard' and s.concept_id = m.measurement_concept_id
    union all
    select s.variable, m.measurement_id, 1 as priority, cast(null as varchar(50)) as overlay_unit
    from candidates as m
    inner join meas_sets as s
        on s.match_on = 'source' and s.concept_id = m.measurement_source_concept_id
    union all
    select o.variable, m.measurement_id, 2 as priority, o.unit as overlay_unit
    from candidates as m
    inner join overlay as o
        on o.match_on = 'source_value' and o.source_value = m.measurement_source_value
    union all
    select o.variable, m.measurement_id, 2 as priority, o.unit as overlay_unit
    from candidates as m
    inner join overlay as o
        on o.match_on = 'source_concept' and o.concept_id = m.measurement_source_concept_id
),

best as (
    select
        variable,
        measurement_id,
        min(priority) as priority,
        -- the overlay unit only matters when the row matched through the overlay alone
        max(overlay_unit) as overlay_unit
    from labelled
    group by variable, measurement_id
)

select
    b.variable,
    m.measurement_id,
    m.person_id,
    m.measurement_date,
    m.value_as_number,
    m.value_as_concept_id,
    m.operator_concept_id,
    m.unit_concept_id,
    m.unit_source_value,
    m.measurement_concept_id,
    m.measurement_source_value,
    b.overlay_unit,
    case when b.priority = 1 then 'concept' else 'overlay' end as matched_by
from best as b
inner join candidates as m
    on m.measurement_id = b.measurement_id
