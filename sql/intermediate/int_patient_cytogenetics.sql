-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, int_measurement_values
-- Rule 11 / 3b.7: poor_cytogenetics, bcr_abl1 = any positive result dated on or before index_date;
-- FALSE (not NULL) when there is none.
with

positives as (
    select
        v.person_id,
        v.variable,
        min(v.measurement_id) as measurement_id
    from int_measurement_values as v
    inner join int_patient_index as i
        on i.person_id = v.person_id
    where v.variable in ('poor_cytogenetics', 'bcr_abl1')
        and v.is_positive
        and v.measurement_date <= i.index_date
    group by v.person_id, v.variable
)

select
    i.person_id,
    pc.measurement_id is not null as poor_cytogenetics,
    pc.measurement_id as poor_cytogenetics_measurement_id,
    ba.measurement_id is not null as bcr_abl1,
    ba.measurement_id as bcr_abl1_measurement_id
from int_patient_index as i
left join positives as pc
    on pc.person_id = i.person_id
    and pc.variable = 'poor_cytogenetics'
left join positives as ba
    on ba.person_id = i.person_id
    and ba.variable = 'bcr_abl1'
