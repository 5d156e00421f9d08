-- grain: one row per person with at least one blinatumomab exposure (the study population)
-- keys: person_id
-- depends_on: int_drug_exposures
-- The only persons a course or patient row can be about. The relations that read the largest fact
-- tables (int_study_measurements, int_study_conditions, int_study_procedures) keep only these persons
-- first (the in_cohort macro of adapter/views.py; PostgreSQL answers it with each table's person_id
-- index), so a hospital's whole MEASUREMENT table is never searched for study codes. Blinatumomab is
-- matched by int_drug_exposures' code-set rule (its one drug_exposure read serves both).
select distinct person_id
from int_drug_exposures
where variable = 'blinatumomab'
