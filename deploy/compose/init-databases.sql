-- One database per service; each service migrates and seeds its own at
-- start-up. Run by the postgres image on its first start only.
CREATE DATABASE shop_order;
CREATE DATABASE shop_inventory;
CREATE DATABASE shop_payment;
CREATE DATABASE shop_notify;
