-- grain: one row per course
-- keys: site_id, person_id, course_number
-- depends_on: int_courses, int_course_status, int_course_cd19, int_course_tcells, int_course_cytokines, int_course_toxicity, int_person, study_params
-- The course-level contract (protocol section 4): exact columns, order and types.
select
    cast(p.site_id as varchar(40)) as site_id,
    cast(c.person_id as bigint) as person_id,
    cast(pe.person_source_value as varchar(50)) as person_source_value,
    cast(c.course_number as integer) as course_number,
    c.course_start,
    c.course_end,
    cast(c.infusion_days as integer) as infusion_days,
    cast(s.pre_status as varchar(10)) as pre_status,
    cast(s.pre_mrd as double precision) as pre_mrd,
    cast(s.pre_blasts_pct as double precision) as pre_blasts_pct,
    cast(s.post_status as varchar(10)) as post_status,
    cast(s.post_mrd as double precision) as post_mrd,
    s.cr,
    s.mrd_maintained,
    s.high_mrd,
    k.cd19_loss,
    cast(cd3.pre_value as double precision) as cd3_pre,
    cast(cd3.post_value as double precision) as cd3_post,
    cast(cd4.pre_value as double precision) as cd4_pre,
    cast(cd4.post_value as double precision) as cd4_post,
    cast(cd8.pre_value as double precision) as cd8_pre,
    cast(cd8.post_value as double precision) as cd8_post,
    cast(il6.peak_value as double precision) as il6_peak,
    cast(il10.peak_value as double precision) as il10_peak,
    cast(ifng.peak_value as double precision) as ifng_peak,
    cast(tnfa.peak_value as double precision) as tnfa_peak,
    cast(crs.max_grade as integer) as crs_max_grade,
    cast(icans.max_grade as integer) as icans_max_grade
from int_courses as c
cross join study_params as p
inner join int_course_status as s
    on s.person_id = c.person_id and s.course_number = c.course_number
left join int_person as pe
    on pe.person_id = c.person_id
left join int_course_cd19 as k
    on k.person_id = c.person_id and k.course_number = c.course_number
left join int_course_tcells as cd3
    on cd3.person_id = c.person_id and cd3.course_number = c.course_number and cd3.variable = 'cd3_abs'
left join int_course_tcells as cd4
    on cd4.person_id = c.person_id and cd4.course_number = c.course_number and cd4.variable = 'cd4_abs'
left join int_course_tcells as cd8
    on cd8.person_id = c.person_id and cd8.course_number = c.course_number and cd8.variable = 'cd8_abs'
left join int_course_cytokines as il6
    on il6.person_id = c.person_id and il6.course_number = c.course_number and il6.variable = 'il6'
left join int_course_cytokines as il10
    on il10.person_id = c.person_id and il10.course_number = c.course_number and il10.variable = 'il10'
left join int_course_cytokines as ifng
    on ifng.person_id = c.person_id and ifng.course_number = c.course_number and ifng.variable = 'ifng'
left join int_course_cytokines as tnfa
    on tnfa.person_id = c.person_id and tnfa.course_number = c.course_number and tnfa.variable = 'tnfa'
left join int_course_toxicity as crs
    on crs.person_id = c.person_id and crs.course_number = c.course_number and crs.variable = 'crs'
left join int_course_toxicity as icans
    on icans.person_id = c.person_id and icans.course_number = c.course_number and icans.variable = 'icans'
