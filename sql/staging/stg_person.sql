-- grain: one row per person
-- keys: person_id
-- depends_on: cdm.person
-- Birth date: birth_datetime when recorded, else year/month/day of birth; a missing month or day
-- takes the middle of the year / month (July 1st, the 15th) so the age error is at most half a unit.
select
    ---------- ids
    p.person_id,
    p.person_source_value,
    ---------- concepts
    p.gender_concept_id,
    ---------- dates
    coalesce(
        cast(p.birth_datetime as date),
        make_date(
            p.year_of_birth,
            coalesce(p.month_of_birth, 7),
            coalesce(p.day_of_birth, case when p.month_of_birth is null then 1 else 15 end)
        )
    ) as birth_date
from {cdm}.person as p
