-- Hostile names: every identifier class MariaDB accepts and today's quote_identifier refuses.
-- Needs fid-objects' identifier quoting (#11) before any engine can back it up; kept apart
-- from corpus.sql so the engine tests are not blocked by it.

SET NAMES utf8mb4;

CREATE TABLE `order` (
  `select` INT PRIMARY KEY,
  `from` VARCHAR(20) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `order` VALUES (1, 'reserved words');

CREATE TABLE `Kunden Übersicht` (
  `Straße Nr` INT PRIMARY KEY,
  `naïve col` VARCHAR(20) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `Kunden Übersicht` VALUES (1, 'space + non-ASCII');

CREATE TABLE `back``tick` (
  `it's` INT PRIMARY KEY,
  `say "hi"` VARCHAR(20) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `back``tick` VALUES (1, 'quotes and backticks');

CREATE TABLE `txxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxz` (
  id INT PRIMARY KEY
) ENGINE=InnoDB;
INSERT INTO `txxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxz` VALUES (64);

CREATE TABLE `表格 ✓` (
  `列` INT PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `表格 ✓` VALUES (7);

CREATE VIEW `view with space` AS SELECT `select`, `from` FROM `order`;

DELIMITER ;;
CREATE TRIGGER `trigger "quoted"` BEFORE INSERT ON `back``tick` FOR EACH ROW
  SET NEW.`say "hi"` = COALESCE(NEW.`say "hi"`, 'default');;
CREATE PROCEDURE `proc with space`() SELECT COUNT(*) FROM `Kunden Übersicht`;;
DELIMITER ;
