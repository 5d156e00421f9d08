-- grain: one row per measurement
-- keys: measurement_id
-- depends_on: cdm.measurement
select
    ---------- ids
    m.measurement_id,
    m.person_id,
    ---------- codes
    m.measurement_concept_id,
    m.measurement_source_concept_id,
    m.measurement_source_value,
    ---------- values (numeric -> double so both engines compute alike)
    cast(m.value_as_number as double precision) as value_as_number,
    m.value_as_concept_id,
    m.operator_concept_id,
    m.unit_concept_id,
    m.unit_source_value,
    ---------- dates
    m.measurement_date
from {cdm}.measurement as m
