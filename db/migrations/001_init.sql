-- rfevents schema, version 1: every table of DESIGN.md "Data".
-- InnoDB, utf8mb4. Values compared byte for byte (ids, identities, sources)
-- are VARBINARY so that no collation folds case or pads trailing spaces.
-- Public ids are random; the BIGINT keys are internal only and nothing
-- relies on their order (Galera interleaves auto-increment values).

CREATE TABLE IF NOT EXISTS tenants (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  slug        VARBINARY(64) NOT NULL,
  created_at  DATETIME(6) NOT NULL,
  UNIQUE KEY tenants_slug (slug)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS api_keys (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  key_id      VARBINARY(32) NOT NULL,          -- public KEY_ID (key_...)
  tenant_id   BIGINT UNSIGNED NOT NULL,
  prefix      VARBINARY(16) NOT NULL,          -- first characters of the key
  digest      BINARY(32) NOT NULL,             -- SHA-256 of the whole key
  scopes      VARBINARY(255) NOT NULL,         -- comma-separated
  sources     VARBINARY(4096) NULL,            -- comma-separated allow-list
  name        VARCHAR(255) NOT NULL DEFAULT '',
  created_at  DATETIME(6) NOT NULL,
  revoked_at  DATETIME(6) NULL,
  UNIQUE KEY api_keys_key_id (key_id),
  UNIQUE KEY api_keys_prefix (prefix),
  KEY api_keys_tenant (tenant_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS profiles (
  id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  tenant_id   BIGINT UNSIGNED NOT NULL,
  public_id   VARBINARY(32) NOT NULL,
  tier        VARBINARY(64) NULL,
  created_at  DATETIME(6) NOT NULL,
  updated_at  DATETIME(6) NOT NULL,
  UNIQUE KEY profiles_public_id (public_id),
  KEY profiles_tenant (tenant_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- type: 0 EXTERNAL, 1 EMAIL, 2 PHONE, 3 DEVICE_KEY (core/core.h ident_type).
-- ext_profile_id is profile_id for EXTERNAL rows and NULL otherwise: its
-- unique key enforces "one EXTERNAL per profile" under concurrency.
CREATE TABLE IF NOT EXISTS identities (
  tenant_id      BIGINT UNSIGNED NOT NULL,
  type           TINYINT UNSIGNED NOT NULL,
  value          VARBINARY(1020) NOT NULL,
  profile_id     BIGINT UNSIGNED NOT NULL,
  ext_profile_id BIGINT UNSIGNED NULL,
  created_at     DATETIME(6) NOT NULL,
  PRIMARY KEY (tenant_id, type, value),
  UNIQUE KEY identities_one_external (ext_profile_id),
  KEY identities_profile (profile_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The dedup key is (tenant_id, source, external_event_id): INSERT IGNORE on
-- it is what makes each event change state at most once.
CREATE TABLE IF NOT EXISTS events (
  id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  tenant_id          BIGINT UNSIGNED NOT NULL,
  source             VARBINARY(64) NOT NULL,
  external_event_id  VARBINARY(1020) NOT NULL,
  public_id          VARBINARY(32) NOT NULL,
  fingerprint        BINARY(32) NOT NULL,
  event_type         VARBINARY(64) NOT NULL,
  occurred_at        DATETIME(6) NOT NULL,       -- UTC
  received_at        DATETIME(6) NOT NULL,       -- UTC
  profile_id         BIGINT UNSIGNED NULL,
  doc                MEDIUMBLOB NOT NULL,        -- stored event JSON
  outcome            MEDIUMBLOB NULL,            -- outcome JSON
  rules_version      VARBINARY(64) NOT NULL DEFAULT '',
  request_id         VARBINARY(128) NOT NULL DEFAULT '',
  UNIQUE KEY events_dedup (tenant_id, source, external_event_id),
  UNIQUE KEY events_public_id (public_id),
  KEY events_profile_time (profile_id, occurred_at, received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS balances (
  profile_id  BIGINT UNSIGNED NOT NULL,
  name        VARBINARY(64) NOT NULL,
  balance     BIGINT NOT NULL DEFAULT 0,
  lifetime    BIGINT NOT NULL DEFAULT 0,         -- only grows
  PRIMARY KEY (profile_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS variables (
  profile_id  BIGINT UNSIGNED NOT NULL,
  name        VARBINARY(64) NOT NULL,
  value       MEDIUMBLOB NOT NULL,               -- JSON value
  PRIMARY KEY (profile_id, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS ledger (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  profile_id     BIGINT UNSIGNED NOT NULL,
  event_id       BIGINT UNSIGNED NOT NULL,
  seq            INT UNSIGNED NOT NULL,          -- order inside the event
  rule_id        VARBINARY(128) NOT NULL,
  balance_name   VARBINARY(64) NOT NULL,
  delta          BIGINT NOT NULL,
  balance_after  BIGINT NOT NULL,
  created_at     DATETIME(6) NOT NULL,
  UNIQUE KEY ledger_event_seq (event_id, seq),
  KEY ledger_profile_time (profile_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Counters for rule limits: period is 'all', 'dYYYY-MM-DD' or 'mYYYY-MM'
-- (UTC, by the event's occurredAt).
CREATE TABLE IF NOT EXISTS rule_counters (
  profile_id  BIGINT UNSIGNED NOT NULL,
  rule_id     VARBINARY(128) NOT NULL,
  period      VARBINARY(16) NOT NULL,
  count       INT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (profile_id, rule_id, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
