-- Hostile MySQL/MariaDB corpus: every shape an engine must round-trip or refuse up front.
-- Loaded with the `mariadb` client into an empty database (tests/corpus/load.py); names here
-- are the ones today's identifier check accepts. Names with spaces, quotes, backticks,
-- non-ASCII letters or reserved words are in hostile_names.sql.
-- The database itself is created latin1 (Sakila-like); programs are created under
-- sql_mode=TRADITIONAL with a non-default client character set and collation.

SET NAMES utf8mb4;
SET sql_mode = 'STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION';

-- generated (VIRTUAL / STORED) and INVISIBLE columns
CREATE TABLE gen_cols (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  price DECIMAL(10,2) NOT NULL,
  qty INT NOT NULL,
  total DECIMAL(12,2) AS (price * qty) STORED,
  label VARCHAR(40) AS (CONCAT('item-', id)) VIRTUAL,
  secret VARCHAR(20) INVISIBLE DEFAULT 'hidden',
  KEY total_idx (total)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO gen_cols (price, qty, secret) VALUES (1.50, 2, 's1'), (10.00, 3, 's2'), (0.99, 100, DEFAULT);

-- system-versioned table with history (timestamp based)
CREATE TABLE versioned (
  id INT PRIMARY KEY,
  v VARCHAR(20) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 WITH SYSTEM VERSIONING;
INSERT INTO versioned VALUES (1, 'first'), (2, 'second');
UPDATE versioned SET v = 'first-changed' WHERE id = 1;
DELETE FROM versioned WHERE id = 2;

-- system-versioned table with transaction-id versioning (only a physical copy keeps it)
CREATE TABLE versioned_trx (
  id INT PRIMARY KEY,
  v INT NOT NULL,
  trx_start BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE,
  trx_end BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE,
  PERIOD FOR SYSTEM_TIME (trx_start, trx_end)
) ENGINE=InnoDB WITH SYSTEM VERSIONING;
INSERT INTO versioned_trx VALUES (1, 1);
UPDATE versioned_trx SET v = 2 WHERE id = 1;

-- sequences
CREATE SEQUENCE order_seq START WITH 1000 INCREMENT BY 5 MINVALUE 1000 MAXVALUE 999999 CACHE 10;
SELECT NEXTVAL(order_seq);
SELECT NEXTVAL(order_seq);

-- CHECK constraints, FULLTEXT, SPATIAL, partitions
CREATE TABLE checked (
  id INT PRIMARY KEY,
  age INT NOT NULL,
  email VARCHAR(100) NOT NULL,
  CONSTRAINT age_positive CHECK (age >= 0),
  CONSTRAINT email_at CHECK (email LIKE '%@%')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO checked VALUES (1, 30, 'a@example.com'), (2, 0, 'b@example.com');

CREATE TABLE articles (
  id INT PRIMARY KEY,
  title VARCHAR(200) NOT NULL,
  body TEXT NOT NULL,
  FULLTEXT KEY ft_title_body (title, body)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO articles VALUES (1, 'MariaDB backups', 'restore everything exactly'),
  (2, 'Fidelity', 'nothing lost, nothing changed');

CREATE TABLE places (
  id INT PRIMARY KEY,
  pos POINT NOT NULL,
  area POLYGON NULL,
  SPATIAL KEY pos_idx (pos)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO places VALUES (1, ST_GeomFromText('POINT(1 2)'), NULL),
  (2, ST_GeomFromText('POINT(-73.98 40.75)'),
   ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))'));

CREATE TABLE metrics_by_year (
  id INT NOT NULL,
  created DATE NOT NULL,
  val DOUBLE NULL,
  PRIMARY KEY (id, created)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
PARTITION BY RANGE (YEAR(created)) (
  PARTITION p2023 VALUES LESS THAN (2024),
  PARTITION p2024 VALUES LESS THAN (2025),
  PARTITION pmax VALUES LESS THAN MAXVALUE
);
INSERT INTO metrics_by_year VALUES (1, '2023-05-01', 1.5), (2, '2024-02-29', NULL),
  (3, '2031-12-31', -0.0), (4, '2024-06-30', 1e300);

CREATE TABLE hashed (
  id INT NOT NULL PRIMARY KEY,
  v INT
) ENGINE=InnoDB PARTITION BY HASH (id) PARTITIONS 3;
INSERT INTO hashed VALUES (1, 1), (2, 2), (3, 3), (4, NULL);

-- non-transactional engines
CREATE TABLE legacy_myisam (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  note VARCHAR(50) CHARACTER SET latin1 NOT NULL
) ENGINE=MyISAM DEFAULT CHARSET=latin1;
INSERT INTO legacy_myisam (note) VALUES ('café'), ('naïve'), ('plain');

CREATE TABLE crash_safe_aria (
  id INT NOT NULL PRIMARY KEY,
  payload VARBINARY(64) NULL
) ENGINE=Aria TRANSACTIONAL=1 DEFAULT CHARSET=utf8mb4;
INSERT INTO crash_safe_aria VALUES (1, UNHEX('DEADBEEF00')), (2, NULL);

-- circular foreign keys
SET foreign_key_checks = 0;
CREATE TABLE fk_a (
  id INT PRIMARY KEY,
  b_id INT NULL,
  KEY b_id (b_id),
  CONSTRAINT fk_a_b FOREIGN KEY (b_id) REFERENCES fk_b (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE fk_b (
  id INT PRIMARY KEY,
  a_id INT NULL,
  KEY a_id (a_id),
  CONSTRAINT fk_b_a FOREIGN KEY (a_id) REFERENCES fk_a (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO fk_a VALUES (1, 10), (2, 20);
INSERT INTO fk_b VALUES (10, 2), (20, 1);
SET foreign_key_checks = 1;

-- an empty table with a high AUTO_INCREMENT
CREATE TABLE empty_high_ai (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  v INT NULL
) ENGINE=InnoDB AUTO_INCREMENT=9000000000 DEFAULT CHARSET=utf8mb4;

-- latin1 / utf8mb4 / binary columns
CREATE TABLE charsets (
  id INT PRIMARY KEY,
  l1 VARCHAR(40) CHARACTER SET latin1 COLLATE latin1_german2_ci NULL,
  u8 VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci NULL,
  bin VARBINARY(40) NULL,
  bin_text VARCHAR(40) CHARACTER SET binary NULL,
  fixed BINARY(4) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO charsets VALUES
  (1, 'Straße', 'emoji 🧪🚀 ünïcødé 漢字', UNHEX('00FF0A0D5C27225A1A'), 'raw\0nul', UNHEX('00000001')),
  (2, '', '', UNHEX(''), '', UNHEX('FFFFFFFF')),
  (3, NULL, NULL, NULL, NULL, NULL),
  (4, 'quote '' and \\ backslash', 'tab\there
newline', 0x27, 0x5C, 0x0D0A0000);

-- BLOB / TEXT rows (the big row is added by the test, size chosen per case)
CREATE TABLE big_rows (
  id INT PRIMARY KEY,
  doc LONGBLOB NULL,
  note MEDIUMTEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO big_rows VALUES (1, REPEAT(UNHEX('00FF'), 1000), REPEAT('ä', 500)), (2, NULL, NULL);

-- a view, created under a different client character set
SET NAMES latin1 COLLATE latin1_general_ci;
CREATE ALGORITHM=MERGE SQL SECURITY INVOKER VIEW totals AS
  SELECT id, total FROM gen_cols WHERE total > 1;
SET NAMES utf8mb4;

-- Sakila-like stored programs: sql_mode=TRADITIONAL, client charset utf8mb3 with a
-- non-default collation; DEFINER users that do not exist on any restore server.
SET sql_mode = 'TRADITIONAL';
SET NAMES utf8mb3 COLLATE utf8mb3_unicode_ci;
DELIMITER ;;
CREATE DEFINER=`ghost_owner`@`localhost` TRIGGER gen_cols_bi BEFORE INSERT ON gen_cols FOR EACH ROW
BEGIN
  IF NEW.qty < 0 THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'qty must not be negative';
  END IF;
END;;
CREATE TRIGGER gen_cols_bi_second BEFORE INSERT ON gen_cols FOR EACH ROW FOLLOWS gen_cols_bi
  SET NEW.price = NEW.price + 0;;
CREATE TRIGGER checked_au AFTER UPDATE ON checked FOR EACH ROW
  INSERT INTO legacy_myisam (note) VALUES (CONCAT('checked ', NEW.id));;
CREATE DEFINER=`ghost_owner`@`localhost` PROCEDURE add_item(IN p DECIMAL(10,2), IN q INT)
  SQL SECURITY DEFINER
  COMMENT 'adds one item'
BEGIN
  INSERT INTO gen_cols (price, qty) VALUES (p, q);
END;;
CREATE FUNCTION item_label(n INT) RETURNS VARCHAR(40) CHARSET utf8mb4
  DETERMINISTIC READS SQL DATA
BEGIN
  RETURN CONCAT('item-', n, '-é');
END;;
CREATE DEFINER=`ghost_owner`@`localhost` EVENT purge_metrics
  ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00'
  ON COMPLETION PRESERVE DISABLE
  COMMENT 'never runs in tests'
  DO DELETE FROM metrics_by_year WHERE created < '2000-01-01';;
DELIMITER ;
SET NAMES utf8mb4;
SET sql_mode = DEFAULT;
