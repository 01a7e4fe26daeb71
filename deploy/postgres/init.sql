-- One database per service: no service reads another's tables.
CREATE DATABASE reporter;
CREATE DATABASE router;
CREATE DATABASE closer;
CREATE DATABASE notifier;
