-- grain: one row per (person_id, status_date, lookback_days) of int_status_times
-- keys: person_id, status_date, lookback_days
-- depends_on: int_status_times, int_assessments, int_study_conditions
-- Rule 2, disease status at t from the latest marrow-blast result and the latest MRD result, each
-- dated in [t - lookback_days, t]:
--   'R/R' if that blast result is >= the threshold, or (no blast result) the MRD result is >= the
--     threshold / 100, or a relapse record is dated in the window after the latest blast result < 5 %
--     (after = strictly later date; with no blast result in the window, any relapse record in the
--     window counts: nothing after it shows a remission);
--   else 'CR-MRDpos' if MRD >= mrd_positive_threshold; else 'CR-MRDneg' if there is an MRD result;
--   else 'unknown'.
-- The ids of the results used are kept for lineage.
with

blasts as (
    select
        t.person_id,
        t.status_date,
        t.lookback_days,
        a.assessment_date,
        a.blasts_pct,
        a.blasts_rr,
        a.blasts_measurement_id,
        row_number() over (
            partition by t.person_id, t.status_date, t.lookback_days
            order by a.assessment_date desc
        ) as rn
    from int_status_times as t
    inner join int_assessments as a
        on a.person_id = t.person_id
        and a.assessment_date >= t.status_date - t.lookback_days
        and a.assessment_date <= t.status_date
    where a.blasts_pct is not null
),

mrd as (
    select
        t.person_id,
        t.status_date,
        t.lookback_days,
        a.assessment_date,
        a.mrd,
        a.mrd_operator,
        a.mrd_rr,
        a.mrd_pos,
        a.mrd_high,
        a.mrd_measurement_id,
        row_number() over (
            partition by t.person_id, t.status_date, t.lookback_days
            order by a.assessment_date desc
        ) as rn
    from int_status_times as t
    inner join int_assessments as a
        on a.person_id = t.person_id
        and a.assessment_date >= t.status_date - t.lookback_days
        and a.assessment_date <= t.status_date
    where a.mrd is not null
),

latest as (
    select
        t.person_id,
        t.status_date,
        t.lookback_days,
        b.assessment_date as blasts_date,
        b.blasts_pct,
        b.blasts_rr,
        b.blasts_measurement_id,
        m.assessment_date as mrd_date,
        m.mrd,
        m.mrd_operator,
        m.mrd_rr,
        m.mrd_pos,
        m.mrd_high,
        m.mrd_measurement_id
    from int_status_times as t
    left join blasts as b
        on b.person_id = t.person_id
        and b.status_date = t.status_date
        and b.lookback_days = t.lookback_days
        and b.rn = 1
    left join mrd as m
        on m.person_id = t.person_id
        and m.status_date = t.status_date
        and m.lookback_days = t.lookback_days
        and m.rn = 1
),

relapse_after as (
    select
        l.person_id,
        l.status_date,
        l.lookback_days,
        min(r.condition_occurrence_id) as relapse_condition_id
    from latest as l
    inner join int_study_conditions as r
        on r.variable = 'relapse'
        and r.person_id = l.person_id
        and r.condition_date >= l.status_date - l.lookback_days
        and r.condition_date <= l.status_date
        and (l.blasts_date is null or r.condition_date > l.blasts_date)
    group by l.person_id, l.status_date, l.lookback_days
)

select
    l.*,
    ra.relapse_condition_id,
    case
        when l.blasts_rr then 'R/R'
        when l.blasts_pct is null and l.mrd_rr then 'R/R'
        when ra.relapse_condition_id is not null then 'R/R'
        when l.mrd is null then 'unknown'
        when l.mrd_pos then 'CR-MRDpos'
        else 'CR-MRDneg'
    end as status
from latest as l
left join relapse_after as ra
    on ra.person_id = l.person_id
    and ra.status_date = l.status_date
    and ra.lookback_days = l.lookback_days
