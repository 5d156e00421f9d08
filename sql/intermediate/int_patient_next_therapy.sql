-- grain: one row per person with at least one course
-- keys: person_id
-- depends_on: int_patient_index, int_study_procedures, int_drug_exposures, study_params
-- Rule 12: within bridge_window_days after the last course_end, i.e. dates in
-- (last_course_end, last_course_end + N] (3b.1): 'HSCT' or 'CAR-T', whichever first (same day: HSCT,
-- the first listed); else 'protocol' if chemotherapy started again in that window; else 'none'.
-- CAR-T is a procedure code or a CAR-T product drug exposure.
with

cellular as (
    select
        x.person_id,
        case when x.variable = 'hsct' then 'HSCT' else 'CAR-T' end as therapy,
        x.procedure_date as therapy_date,
        'procedure_occurrence:' || cast(x.procedure_occurrence_id as varchar(20)) as source
    from int_study_procedures as x
    where x.variable in ('hsct', 'car_t')
    union all
    select
        d.person_id,
        'CAR-T' as therapy,
        d.start_date as therapy_date,
        'drug_exposure:' || cast(d.drug_exposure_id as varchar(20)) as source
    from int_drug_exposures as d
    where d.variable = 'car_t'
),

first_cellular as (
    select
        c.person_id,
        c.therapy,
        c.source,
        row_number() over (
            partition by c.person_id
            order by c.therapy_date, case when c.therapy = 'HSCT' then 0 else 1 end, c.source
        ) as rn
    from cellular as c
    cross join study_params as p
    inner join int_patient_index as i
        on i.person_id = c.person_id
    where c.therapy_date > i.last_course_end
        and c.therapy_date <= i.last_course_end + p.bridge_window_days
),

chemo as (
    select
        d.person_id,
        min('drug_exposure:' || cast(d.drug_exposure_id as varchar(20))) as source
    from int_drug_exposures as d
    cross join study_params as p
    inner join int_patient_index as i
        on i.person_id = d.person_id
    where d.variable = 'chemotherapy'
        and d.start_date > i.last_course_end
        and d.start_date <= i.last_course_end + p.bridge_window_days
    group by d.person_id
)

select
    i.person_id,
    case
        when f.therapy is not null then f.therapy
        when ch.source is not null then 'protocol'
        else 'none'
    end as next_therapy,
    coalesce(f.source, ch.source) as next_therapy_source
from int_patient_index as i
left join first_cellular as f
    on f.person_id = i.person_id
    and f.rn = 1
left join chemo as ch
    on ch.person_id = i.person_id
