-- grain: one row per (variable, measurement_id)
-- keys: variable, measurement_id
-- depends_on: int_study_measurements, study_variables, study_units, int_value_sets, int_operators, stg_concept
-- Canonical values (protocol section 2, docs/omop-conventions.md "Units" and "Operators").
--   unit_code: the UCUM code of unit_concept_id; when that is 0 / NULL, the overlay's unit for rows
--     matched through the overlay, else unit_source_value read as a UCUM code.
--   value: value_as_number x the unit family's factor (study_units), rounded to the decimals the
--     source value and the factor carry together (docs/protocol-rules.md "Exact values after unit
--     conversion"): the exact decimal product, as a person writes it in the canonical unit
--     (570 /uL x 0.001 = 0.57, not 0.5700000000000001), so values equal in the source stay equal
--     (ties in rank tests). Decimals of a number x: the smallest d in 0..15 with
--     floor(x * 10^d + 0.5) / 10^d = x (its shortest decimal form); a number with more (1/3 as a
--     double) or a product too large to round exactly (|x| * 10^d >= 1e15) is kept unrounded. Only
--     IEEE multiply, add, floor and divide: the same double on DuckDB and PostgreSQL.
--     A quantity with no number but a negative answer concept ("not detected") is 0 with
--     operator '<'. A zero needs no unit.
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
        u.factor,
        r.value_as_number * u.factor as product
    from resolved as r
    left join study_units as u
        on u.unit_family = r.unit_family
        and u.unit_code = r.unit_code
),

decimals as (
    -- the decimals the source value and the factor carry (NULL: more than 15, kept unrounded)
    select
        c.*,
        case
            when floor(c.value_as_number * cast(1e0 as double precision) + 0.5) / cast(1e0 as double precision) = c.value_as_number then 0
            when floor(c.value_as_number * cast(1e1 as double precision) + 0.5) / cast(1e1 as double precision) = c.value_as_number then 1
            when floor(c.value_as_number * cast(1e2 as double precision) + 0.5) / cast(1e2 as double precision) = c.value_as_number then 2
            when floor(c.value_as_number * cast(1e3 as double precision) + 0.5) / cast(1e3 as double precision) = c.value_as_number then 3
            when floor(c.value_as_number * cast(1e4 as double precision) + 0.5) / cast(1e4 as double precision) = c.value_as_number then 4
            when floor(c.value_as_number * cast(1e5 as double precision) + 0.5) / cast(1e5 as double precision) = c.value_as_number then 5
            when floor(c.value_as_number * cast(1e6 as double precision) + 0.5) / cast(1e6 as double precision) = c.value_as_number then 6
            when floor(c.value_as_number * cast(1e7 as double precision) + 0.5) / cast(1e7 as double precision) = c.value_as_number then 7
            when floor(c.value_as_number * cast(1e8 as double precision) + 0.5) / cast(1e8 as double precision) = c.value_as_number then 8
            when floor(c.value_as_number * cast(1e9 as double precision) + 0.5) / cast(1e9 as double precision) = c.value_as_number then 9
            when floor(c.value_as_number * cast(1e10 as double precision) + 0.5) / cast(1e10 as double precision) = c.value_as_number then 10
            when floor(c.value_as_number * cast(1e11 as double precision) + 0.5) / cast(1e11 as double precision) = c.value_as_number then 11
            when floor(c.value_as_number * cast(1e12 as double precision) + 0.5) / cast(1e12 as double precision) = c.value_as_number then 12
            when floor(c.value_as_number * cast(1e13 as double precision) + 0.5) / cast(1e13 as double precision) = c.value_as_number then 13
            when floor(c.value_as_number * cast(1e14 as double precision) + 0.5) / cast(1e14 as double precision) = c.value_as_number then 14
            when floor(c.value_as_number * cast(1e15 as double precision) + 0.5) / cast(1e15 as double precision) = c.value_as_number then 15
        end
        + case
            when floor(c.factor * cast(1e0 as double precision) + 0.5) / cast(1e0 as double precision) = c.factor then 0
            when floor(c.factor * cast(1e1 as double precision) + 0.5) / cast(1e1 as double precision) = c.factor then 1
            when floor(c.factor * cast(1e2 as double precision) + 0.5) / cast(1e2 as double precision) = c.factor then 2
            when floor(c.factor * cast(1e3 as double precision) + 0.5) / cast(1e3 as double precision) = c.factor then 3
            when floor(c.factor * cast(1e4 as double precision) + 0.5) / cast(1e4 as double precision) = c.factor then 4
            when floor(c.factor * cast(1e5 as double precision) + 0.5) / cast(1e5 as double precision) = c.factor then 5
            when floor(c.factor * cast(1e6 as double precision) + 0.5) / cast(1e6 as double precision) = c.factor then 6
            when floor(c.factor * cast(1e7 as double precision) + 0.5) / cast(1e7 as double precision) = c.factor then 7
            when floor(c.factor * cast(1e8 as double precision) + 0.5) / cast(1e8 as double precision) = c.factor then 8
            when floor(c.factor * cast(1e9 as double precision) + 0.5) / cast(1e9 as double precision) = c.factor then 9
            when floor(c.factor * cast(1e10 as double precision) + 0.5) / cast(1e10 as double precision) = c.factor then 10
            when floor(c.factor * cast(1e11 as double precision) + 0.5) / cast(1e11 as double precision) = c.factor then 11
            when floor(c.factor * cast(1e12 as double precision) + 0.5) / cast(1e12 as double precision) = c.factor then 12
            when floor(c.factor * cast(1e13 as double precision) + 0.5) / cast(1e13 as double precision) = c.factor then 13
            when floor(c.factor * cast(1e14 as double precision) + 0.5) / cast(1e14 as double precision) = c.factor then 14
            when floor(c.factor * cast(1e15 as double precision) + 0.5) / cast(1e15 as double precision) = c.factor then 15
        end as product_decimals
    from converted as c
),

scaled as (
    select
        d.*,
        power(cast(10 as double precision), d.product_decimals) as scale
    from decimals as d
),

exact as (
    select
        s.*,
        case
            when s.product is null or s.scale is null then s.product
            when abs(s.product) * s.scale >= cast(1e15 as double precision) then s.product
            else floor(s.product * s.scale + 0.5) / s.scale
        end as exact_product
    from scaled as s
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
        when value_as_number is not null and factor is not null then exact_product
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
from exact
