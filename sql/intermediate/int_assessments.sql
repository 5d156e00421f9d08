-- grain: one row per (person_id, assessment_date) with a usable marrow-blast or MRD result
-- keys: person_id, assessment_date
-- depends_on: int_measurement_values, study_params
-- Disease assessments (rule 2 inputs). Several results of one person on one day for the same variable:
-- the worst one counts (highest value; at equal values a plain result beats a '< x' one), as
-- docs/omop-conventions.md asks. Threshold tests are made here, once (a relative tolerance of 1e-9
-- absorbs unit-factor rounding, e.g. 0.01 % x 0.01 = 1e-4):
--   blasts_rr: blasts >= blast_cr_threshold_pct; a '< x' blast result with x <= t is below t.
--   MRD ("MRD >= t" needs a plain, '=', '>' or '>=' value at or above t; "MRD < t" is a plain value
--   below t, '< x' with x <= t, or '<= x' with x < t; a '< x' with x above t is neither, so the
--   status is 'unknown'): mrd_rr (>= blast_cr_threshold_pct / 100), mrd_pos and mrd_neg
--   (mrd_positive_threshold), mrd_high (rule 8 / 3b.5: high_mrd_threshold; '< x' with x <= t is not
--   high, '< x' with x above t is undetermined, NULL).
with

ranked as (
    select
        v.variable,
        v.person_id,
        v.measurement_date,
        v.measurement_id,
        v.value,
        v.operator,
        row_number() over (
            partition by v.person_id, v.measurement_date, v.variable
            order by
                v.value desc,
                case when v.operator in ('<', '<=') then 1 else 0 end,
                v.measurement_id
        ) as rn
    from int_measurement_values as v
    where v.variable in ('marrow_blasts', 'mrd')
        and v.value_status = 'ok'
        and v.value is not null
),

daily as (
    select
        person_id,
        measurement_date as assessment_date,
        max(case when variable = 'marrow_blasts' then value end) as blasts_pct,
        max(case when variable = 'marrow_blasts' then operator end) as blasts_operator,
        max(case when variable = 'marrow_blasts' then measurement_id end) as blasts_measurement_id,
        max(case when variable = 'mrd' then value end) as mrd,
        max(case when variable = 'mrd' then operator end) as mrd_operator,
        max(case when variable = 'mrd' then measurement_id end) as mrd_measurement_id
    from ranked
    where rn = 1
    group by person_id, measurement_date
),

limits as (
    select
        p.blast_cr_threshold_pct * (1 - 1e-9) as blast_lo,
        p.blast_cr_threshold_pct * (1 + 1e-9) as blast_hi,
        p.blast_cr_threshold_pct / 100 * (1 - 1e-9) as mrd_rr_lo,
        p.blast_cr_threshold_pct / 100 * (1 + 1e-9) as mrd_rr_hi,
        p.mrd_positive_threshold * (1 - 1e-9) as mrd_pos_lo,
        p.mrd_positive_threshold * (1 + 1e-9) as mrd_pos_hi,
        p.high_mrd_threshold * (1 - 1e-9) as mrd_high_lo,
        p.high_mrd_threshold * (1 + 1e-9) as mrd_high_hi
    from study_params as p
)

select
    d.*,
    case when d.blasts_pct is null then null
        else d.blasts_pct >= l.blast_lo and not (d.blasts_operator = '<' and d.blasts_pct <= l.blast_hi)
    end as blasts_rr,
    case when d.mrd is null then null
        else d.mrd_operator not in ('<', '<=') and d.mrd >= l.mrd_rr_lo
    end as mrd_rr,
    case when d.mrd is null then null
        else d.mrd_operator not in ('<', '<=') and d.mrd >= l.mrd_pos_lo
    end as mrd_pos,
    case
        when d.mrd is null then null
        when d.mrd_operator = '=' then d.mrd < l.mrd_pos_lo
        when d.mrd_operator = '<' then d.mrd <= l.mrd_pos_hi
        when d.mrd_operator = '<=' then d.mrd < l.mrd_pos_lo
        else false
    end as mrd_neg,
    case
        when d.mrd is null then null
        when d.mrd_operator in ('<', '<=') then case when d.mrd <= l.mrd_high_hi then false end
        else d.mrd >= l.mrd_high_lo
    end as mrd_high
from daily as d
cross join limits as l
