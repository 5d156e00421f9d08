-- grain: one row per observation
-- keys: observation_id
-- depends_on: cdm.observation
-- Read for follow-up only (3b.10: every fact date counts).
select
    o.observation_id,
    o.person_id,
    o.observation_date
from {cdm}.observation as o
