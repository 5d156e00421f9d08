-- grain: one row per observation period
-- keys: observation_period_id
-- depends_on: cdm.observation_period
select
    op.observation_period_id,
    op.person_id,
    op.observation_period_start_date,
    op.observation_period_end_date
from {cdm}.observation_period as op
