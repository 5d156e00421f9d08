-- grain: one row per course
-- keys: person_id, course_number
-- depends_on: int_courses, int_status_at, int_course_response_dates, study_params
-- Rule 3: pre_status = status at course_start (results on the start day count).
-- Rule 7: post_status = status from the response date's results alone ('NE' without a response date).
--   pre R/R: cr = the response date's blasts < threshold, true even when post_status is 'unknown'
--     (3b.6); with no blast result that day, cr = post_status is a CR status (NULL if 'unknown').
--   pre CR-MRDpos: cr = post_status 'CR-MRDneg'. pre CR-MRDneg: mrd_maintained = post_status
--     'CR-MRDneg'. When the response date has no MRD result (post_status 'unknown') MRD clearance /
--     maintenance cannot be judged: NULL (clinical reading; the protocol is silent).
--   cr and mrd_maintained are NULL where not applicable, for pre 'unknown' and for 'NE'.
-- Rule 8 / 3b.5: high_mrd = pre-course MRD >= high_mrd_threshold ('< x' with x <= threshold is not
--   high, '< x' above it is undetermined: NULL); for pre R/R without MRD, blasts / 100 is used;
--   NULL when not R/R and no MRD.
-- 3b.4: pre_mrd / post_mrd = the MRD value used ('< x' stored as x, not detected as 0).
select
    c.person_id,
    c.course_number,
    c.course_start,
    c.course_end,
    pre.status as pre_status,
    pre.mrd as pre_mrd,
    pre.blasts_pct as pre_blasts_pct,
    pre.blasts_measurement_id as pre_blasts_measurement_id,
    pre.mrd_measurement_id as pre_mrd_measurement_id,
    pre.relapse_condition_id as pre_relapse_condition_id,
    r.response_date,
    coalesce(post.status, 'NE') as post_status,
    post.mrd as post_mrd,
    post.blasts_measurement_id as post_blasts_measurement_id,
    post.mrd_measurement_id as post_mrd_measurement_id,
    post.relapse_condition_id as post_relapse_condition_id,
    case
        when post.status is null then null
        when pre.status = 'R/R' then
            case
                when post.blasts_pct is not null then not post.blasts_rr
                when post.status = 'unknown' then null
                else post.status in ('CR-MRDpos', 'CR-MRDneg')
            end
        when pre.status = 'CR-MRDpos' then
            case when post.status = 'unknown' then null else post.status = 'CR-MRDneg' end
    end as cr,
    case
        when post.status is null then null
        when pre.status = 'CR-MRDneg' then
            case when post.status = 'unknown' then null else post.status = 'CR-MRDneg' end
    end as mrd_maintained,
    case
        when pre.mrd is not null then pre.mrd_high
        when pre.status = 'R/R' and pre.blasts_pct is not null then
            pre.blasts_pct / 100 >= p.high_mrd_threshold * (1 - 1e-9)
    end as high_mrd
from int_courses as c
cross join study_params as p
inner join int_status_at as pre
    on pre.person_id = c.person_id
    and pre.status_date = c.course_start
    and pre.mode = 'window'
left join int_course_response_dates as r
    on r.person_id = c.person_id
    and r.course_number = c.course_number
left join int_status_at as post
    on post.person_id = r.person_id
    and post.status_date = r.response_date
    and post.mode = 'day'
