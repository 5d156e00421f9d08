-- grain: one row per person with at least one course
-- keys: site_id, person_id
-- depends_on: int_patient_index, int_person, int_patient_burden, int_patient_cytogenetics, int_patient_next_therapy, int_patient_efs, int_patient_os, study_params
-- The patient-level contract (protocol section 4): exact columns, order and types.
-- 3b.11: age_at_index_years = (index_date - birth date) in days / 365.25.
select
    cast(p.site_id as varchar(40)) as site_id,
    cast(i.person_id as bigint) as person_id,
    cast(pe.person_source_value as varchar(50)) as person_source_value,
    cast(coalesce(pe.sex, 'unknown') as varchar(10)) as sex,
    cast(i.index_date - pe.birth_date as double precision) / 365.25 as age_at_index_years,
    i.index_date,
    cast(i.n_courses as integer) as n_courses,
    cast(b.indication as varchar(20)) as indication,
    cast(b.status_at_referral as varchar(10)) as status_at_referral,
    b.burden_reduction,
    cg.poor_cytogenetics,
    cg.bcr_abl1,
    cast(nt.next_therapy as varchar(10)) as next_therapy,
    os.last_followup,
    e.efs_event_type is not null as efs_event,
    cast(e.efs_event_type as varchar(20)) as efs_event_type,
    cast(e.efs_days as integer) as efs_days,
    os.os_event,
    cast(os.os_days as integer) as os_days
from int_patient_index as i
cross join study_params as p
left join int_person as pe
    on pe.person_id = i.person_id
inner join int_patient_burden as b
    on b.person_id = i.person_id
inner join int_patient_cytogenetics as cg
    on cg.person_id = i.person_id
inner join int_patient_next_therapy as nt
    on nt.person_id = i.person_id
inner join int_patient_efs as e
    on e.person_id = i.person_id
inner join int_patient_os as os
    on os.person_id = i.person_id
