-- grain: one row per (derived value, source record)
-- keys: site_id, person_id, course_number, derived, source
-- depends_on: int_course_exposures, int_course_status, int_course_cd19, int_course_tcells, int_course_cytokines, int_course_toxicity, int_patient_burden, int_patient_cytogenetics, int_patient_next_therapy, int_patient_efs, study_params
-- Lineage (protocol section 4): for each derived value, the OMOP records it came from, as
-- 'table:row_id'. course_number is NULL for patient-level values. Stays at the site, never exported.
with

course_level as (
    select person_id, course_number, 'course' as derived,
        'drug_exposure:' || cast(drug_exposure_id as varchar(20)) as source
    from int_course_exposures
    union all
    select person_id, course_number, 'pre_blasts_pct',
        'measurement:' || cast(pre_blasts_measurement_id as varchar(20))
    from int_course_status where pre_blasts_measurement_id is not null
    union all
    select person_id, course_number, 'pre_mrd',
        'measurement:' || cast(pre_mrd_measurement_id as varchar(20))
    from int_course_status where pre_mrd_measurement_id is not null
    union all
    select person_id, course_number, 'pre_status',
        'measurement:' || cast(pre_blasts_measurement_id as varchar(20))
    from int_course_status where pre_blasts_measurement_id is not null
    union all
    select person_id, course_number, 'pre_status',
        'measurement:' || cast(pre_mrd_measurement_id as varchar(20))
    from int_course_status where pre_mrd_measurement_id is not null
    union all
    select person_id, course_number, 'pre_status',
        'condition_occurrence:' || cast(pre_relapse_condition_id as varchar(20))
    from int_course_status where pre_relapse_condition_id is not null
    union all
    select person_id, course_number, 'post_status',
        'measurement:' || cast(post_blasts_measurement_id as varchar(20))
    from int_course_status where post_blasts_measurement_id is not null
    union all
    select person_id, course_number, 'post_status',
        'measurement:' || cast(post_mrd_measurement_id as varchar(20))
    from int_course_status where post_mrd_measurement_id is not null
    union all
    select person_id, course_number, 'post_status',
        'condition_occurrence:' || cast(post_relapse_condition_id as varchar(20))
    from int_course_status where post_relapse_condition_id is not null
    union all
    select person_id, course_number, 'post_mrd',
        'measurement:' || cast(post_mrd_measurement_id as varchar(20))
    from int_course_status where post_mrd_measurement_id is not null
    union all
    select person_id, course_number, 'cd19_loss',
        'measurement:' || cast(cd19_measurement_id as varchar(20))
    from int_course_cd19 where cd19_measurement_id is not null
    union all
    select person_id, course_number, 'cd19_loss',
        'measurement:' || cast(finding_measurement_id as varchar(20))
    from int_course_cd19 where finding_measurement_id is not null
    union all
    select person_id, course_number, replace(variable, '_abs', '') || '_pre',
        'measurement:' || cast(pre_measurement_id as varchar(20))
    from int_course_tcells where pre_measurement_id is not null
    union all
    select person_id, course_number, replace(variable, '_abs', '') || '_post',
        'measurement:' || cast(post_measurement_id as varchar(20))
    from int_course_tcells where post_measurement_id is not null
    union all
    select person_id, course_number, variable || '_peak',
        'measurement:' || cast(peak_measurement_id as varchar(20))
    from int_course_cytokines
    union all
    select person_id, course_number, variable || '_max_grade',
        'condition_occurrence:' || cast(condition_occurrence_id as varchar(20))
    from int_course_toxicity
),

patient_level as (
    select person_id, 'burden_reduction' as derived,
        'drug_exposure:' || cast(burden_drug_exposure_id as varchar(20)) as source
    from int_patient_burden where burden_drug_exposure_id is not null
    union all
    select person_id, 'indication',
        'drug_exposure:' || cast(delay_drug_exposure_id as varchar(20))
    from int_patient_burden where delay_drug_exposure_id is not null
    union all
    select person_id, 'poor_cytogenetics',
        'measurement:' || cast(poor_cytogenetics_measurement_id as varchar(20))
    from int_patient_cytogenetics where poor_cytogenetics_measurement_id is not null
    union all
    select person_id, 'bcr_abl1',
        'measurement:' || cast(bcr_abl1_measurement_id as varchar(20))
    from int_patient_cytogenetics where bcr_abl1_measurement_id is not null
    union all
    select person_id, 'next_therapy', next_therapy_source
    from int_patient_next_therapy where next_therapy_source is not null
    union all
    select person_id, 'efs_event', relapse_source
    from int_patient_efs where relapse_source is not null and efs_event_type = 'relapse'
)

select
    cast(p.site_id as varchar(40)) as site_id,
    cast(x.person_id as bigint) as person_id,
    cast(x.course_number as integer) as course_number,
    cast(x.derived as varchar(40)) as derived,
    cast(x.source as varchar(80)) as source
from course_level as x
cross join study_params as p
union all
select
    cast(p.site_id as varchar(40)),
    cast(x.person_id as bigint),
    cast(null as integer),
    cast(x.derived as varchar(40)),
    cast(x.source as varchar(80))
from patient_level as x
cross join study_params as p
