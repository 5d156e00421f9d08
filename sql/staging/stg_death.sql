-- grain: one row per death record (normally one per person)
-- keys: person_id, death_date
-- depends_on: cdm.death
select
    d.person_id,
    d.death_date
from {cdm}.death as d
