-- grain: one row per (person_id, status_date, mode) of int_status_times
-- keys: person_id, status_date, mode
-- depends_on: int_status_times, int_assessments, int_study_conditions, study_params
-- Rule 2, disease status at t from the latest marrow-blast result and the latest MRD result, each
-- dated in [t - status_lookback_days, t] (mode 'window'), or dated t itself (mode 'day', rule 7):
--   'R/R' if that blast result is >= the threshold, or (no blast result) the MRD result is >= the
--     threshold / 100, or (mode 'window' only: relapse records are not results) a relapse record is
--     dated in the window after the latest blast result < 5 % (after = a strictly later date; with
--     no blast result in the window any relapse record in it counts: nothing after it shows a
--     remission);
--   else 'CR-MRDpos' if MRD >= mrd_positive_threshold; else 'CR-MRDneg' if MRD < threshold (see
--   int_assessments for '< x' results); else 'unknown'.
-- The ids of the results used are kept for lineage.
with

times as (
    select
        t.person_id,
        t.status_date,
        t.mode,
        case when t.mode = 'day' then t.status_date
            else t.status_date - p.status_lookback_days
        end as window_start
    from int_status_times as t
    cross join study_params as p
),

blasts as (
    select
        t.person_id,
        t.status_date,
        t.mode,
        a.assessment_date,
        a.blasts_pct,
        a.blasts_rr,
        a.blasts_measurement_id,
        row_number() over (
            partition by t.person_id, t.status_date, t.mode
            order by a.assessment_date desc
        ) as rn
    from times as t
    inner join int_assessments as a
        on a.person_id = t.person_id
        and a.assessment_date >= t.window_start
        and a.assessment_date <= t.status_date
    where a.blasts_pct is not null
),

mrd as (
    select
        t.person_id,
        t.status_date,
        t.mode,
        a.assessment_date,
        a.mrd,
        a.mrd_operator,
        a.mrd_rr,
        a.mrd_pos,
        a.mrd_neg,
        a.mrd_high,
        a.mrd_measurement_id,
        row_number() over (
            partition by t.person_id, t.status_date, t.mode
            order by a.assessment_date desc
        ) as rn
    from times as t
    inner join int_assessments as a
        on a.person_id = t.person_id
        and a.assessment_date >= t.window_start
        and a.assessment_date <= t.status_date
    where a.mrd is not null
),

latest as (
    select
        t.person_id,
        t.status_date,
        t.mode,
        t.window_start,
        b.assessment_date as blasts_date,
        b.blasts_pct,
        b.blasts_rr,
        b.blasts_measurement_id,
        m.assessment_date as mrd_date,
        m.mrd,
        m.mrd_operator,
        m.mrd_rr,
        m.mrd_pos,
        m.mrd_neg,
        m.mrd_high,
        m.mrd_measurement_id
    from times as t
    left join blasts as b
        on b.person_id = t.person_id
        and b.status_date = t.status_date
        and b.mode = t.mode
        and b.rn = 1
    left join mrd as m
        on m.person_id = t.person_id
        and m.status_date = t.status_date
        and m.mode = t.mode
        and m.rn = 1
),

relapse_after as (
    select
        l.person_id,
        l.status_date,
        l.mode,
        min(r.condition_occurrence_id) as relapse_condition_id
    from latest as l
    inner join int_study_conditions as r
        on r.variable = 'relapse'
        and r.person_id = l.person_id
        and r.condition_date >= l.window_start
        and r.condition_date <= l.status_date
        and (l.blasts_date is null or r.condition_date > l.blasts_date)
    where l.mode = 'window'
    group by l.person_id, l.status_date, l.mode
)

select
    l.person_id,
    l.status_date,
    l.mode,
    l.blasts_date,
    l.blasts_pct,
    l.blasts_rr,
    l.blasts_measurement_id,
    l.mrd_date,
    l.mrd,
    l.mrd_operator,
    l.mrd_pos,
    l.mrd_high,
    l.mrd_measurement_id,
    ra.relapse_condition_id,
    case
        when l.blasts_rr then 'R/R'
        when l.blasts_pct is null and l.mrd_rr then 'R/R'
        when ra.relapse_condition_id is not null then 'R/R'
        when l.mrd_pos then 'CR-MRDpos'
        when l.mrd_neg then 'CR-MRDneg'
        else 'unknown'
    end as status
from latest as l
left join relapse_after as ra
    on ra.person_id = l.person_id
    and ra.status_date = l.status_date
    and ra.mode = l.mode
