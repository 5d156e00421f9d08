-- grain: one row per (variable, measurement_id)
-- keys: variable, measurement_id
-- depends_on: int_study_measurements, study_variables, study_units, int_value_sets, int_operators, stg_concept
-- Canonical values (protocol section 2, docs/omop-conventions.md "Units" and "Operators").
--   unit_code: the UCUM code of unit_concept_id; when that is 0 / NULL, the overlay's unit for rows
--     matched through the overlay, else unit_source_value read as a UCUM code.
--   value: value_as_number x the unit family's factor (study_units). A quantity with no number but a
--     negative answer concept ("not detected") is 0 with operator '<'. A zero needs no unit.
--   operator: '<', '<=', '=', '>=', '>' from operator_concept_id; none means '='.
--   is_positive (detected variables): positive answer concept or a number > 0 (ratios); FALSE for a
--     negative answer or 0; NULL when neither.
--   value_status: 'ok', or why the row is kept out of the analysis ('no_value', 'no_unit',
--     'unit_not_convertible'); never turned into NULL or 0 silently (blina check counts these).
with

resolved as (
    select
        sm.variable,
        sm.measurement_id,
        sm.person_id,
        sm.measurement_date,
        sm.value_as_number,
        v.value_kind,
        v.unit_family,
        coalesce(op.operator, '=') as operator,
        coalesce(
            uc.concept_code,
            case when sm.matched_by = 'overlay' then sm.overlay_unit end,
            nullif(trim(sm.unit_source_value), '')
        ) as unit_code,
        neg.concept_id is not null as answer_negative,
        pos.concept_id is not null as answer_positive
    from int_study_measurements as sm
    inner join study_variables as v
        on v.variable = sm.variable
    left join int_operators as op
        on op.concept_id = sm.operator_concept_id
    left join (
        -- UCUM units only (read through the vocabulary_id index, not the whole CONCEPT table)
        select concept_id, concept_code from stg_concept where vocabulary_id = 'UCUM'
    ) as uc
        on uc.concept_id = sm.unit_concept_id
        and sm.unit_concept_id <> 0
    left join int_value_sets as neg
        on neg.polarity = 'negative'
        and neg.concept_id = sm.value_as_concept_id
    left join int_value_sets as pos
        on pos.polarity = 'positive'
        and pos.concept_id = sm.value_as_concept_id
),

converted as (
    select
        r.*,
        u.factor
    from resolved as r
    left join study_units as u
        on u.unit_family = r.unit_family
        and u.unit_code = r.unit_code
)

select
    variable,
    measurement_id,
    person_id,
    measurement_date,
    unit_code,
    case
        when value_kind <> 'quantity' then null
        when value_as_number is null and answer_negative then cast(0 as double precision)
        when value_as_number = 0 then cast(0 as double precision)
        when value_as_number is not null and factor is not null then value_as_number * factor
    end as value,
    case
        when value_kind = 'quantity' and value_as_number is null and answer_negative then '<'
        else operator
    end as operator,
    case
        when value_kind <> 'detected' then null
        when answer_positive then true
        when answer_negative then false
        when value_as_number > 0 then true
        when value_as_number = 0 then false
    end as is_positive,
    case
        when value_kind = 'quantity' then
            case
                when value_as_number is null and answer_negative then 'ok'
                when value_as_number is null then 'no_value'
                when value_as_number = 0 then 'ok'
                when unit_code is null then 'no_unit'
                when factor is null then 'unit_not_convertible'
                else 'ok'
            end
        when value_kind = 'detected' then
            case
                when answer_positive or answer_negative or value_as_number is not null then 'ok'
                else 'no_value'
            end
        else 'ok'
    end as value_status
from converted
