-- Standard OMOP CDM v5.4 indexes (OHDSI CommonDataModel inst/ddl/5.4/postgresql/OMOPCDM_postgresql_5.4_indices.sql),
-- for the tables this study uses. PostgreSQL only: DuckDB scans columnar data without them.
-- {cdm} and {vocab} are replaced by validated, quoted schema names.
CREATE INDEX IF NOT EXISTS idx_person_id ON {cdm}.person (person_id);
CREATE INDEX IF NOT EXISTS idx_observation_period_id_1 ON {cdm}.observation_period (person_id);
CREATE INDEX IF NOT EXISTS idx_visit_person_id_1 ON {cdm}.visit_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_visit_concept_id_1 ON {cdm}.visit_occurrence (visit_concept_id);
CREATE INDEX IF NOT EXISTS idx_condition_person_id_1 ON {cdm}.condition_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_condition_concept_id_1 ON {cdm}.condition_occurrence (condition_concept_id);
CREATE INDEX IF NOT EXISTS idx_drug_person_id_1 ON {cdm}.drug_exposure (person_id);
CREATE INDEX IF NOT EXISTS idx_drug_concept_id_1 ON {cdm}.drug_exposure (drug_concept_id);
CREATE INDEX IF NOT EXISTS idx_procedure_person_id_1 ON {cdm}.procedure_occurrence (person_id);
CREATE INDEX IF NOT EXISTS idx_procedure_concept_id_1 ON {cdm}.procedure_occurrence (procedure_concept_id);
CREATE INDEX IF NOT EXISTS idx_measurement_person_id_1 ON {cdm}.measurement (person_id);
CREATE INDEX IF NOT EXISTS idx_measurement_concept_id_1 ON {cdm}.measurement (measurement_concept_id);
CREATE INDEX IF NOT EXISTS idx_observation_person_id_1 ON {cdm}.observation (person_id);
CREATE INDEX IF NOT EXISTS idx_observation_concept_id_1 ON {cdm}.observation (observation_concept_id);
CREATE INDEX IF NOT EXISTS idx_death_person_id_1 ON {cdm}.death (person_id);
CREATE INDEX IF NOT EXISTS idx_episode_person_id_1 ON {cdm}.episode (person_id);
CREATE INDEX IF NOT EXISTS idx_concept_code ON {vocab}.concept (concept_code);
CREATE INDEX IF NOT EXISTS idx_concept_vocabluary_id ON {vocab}.concept (vocabulary_id);
CREATE INDEX IF NOT EXISTS idx_concept_domain_id ON {vocab}.concept (domain_id);
CREATE INDEX IF NOT EXISTS idx_concept_ancestor_id_1 ON {vocab}.concept_ancestor (ancestor_concept_id);
CREATE INDEX IF NOT EXISTS idx_concept_ancestor_id_2 ON {vocab}.concept_ancestor (descendant_concept_id);
CREATE INDEX IF NOT EXISTS idx_concept_relationship_id_1 ON {vocab}.concept_relationship (concept_id_1);
CREATE INDEX IF NOT EXISTS idx_concept_relationship_id_2 ON {vocab}.concept_relationship (concept_id_2);
CREATE INDEX IF NOT EXISTS idx_concept_relationship_id_3 ON {vocab}.concept_relationship (relationship_id);
