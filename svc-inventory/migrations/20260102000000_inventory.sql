-- Catalog and stock of svc-inventory.

CREATE TABLE products (
    sku         text   PRIMARY KEY CONSTRAINT products_sku_format CHECK (sku ~ '^[A-Z0-9][A-Z0-9_-]{0,63}$'),
    name        text   NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text   NOT NULL DEFAULT '',
    price_minor bigint NOT NULL CONSTRAINT products_price_non_negative CHECK (price_minor >= 0),
    currency    text   NOT NULL CHECK (currency ~ '^[A-Z]{3}$')
);

-- Stock can never go negative, and never more can be held than is on hand:
-- the database refuses it whatever the code does.
CREATE TABLE stock (
    sku        text        PRIMARY KEY REFERENCES products (sku),
    on_hand    bigint      NOT NULL CONSTRAINT stock_on_hand_non_negative CHECK (on_hand >= 0),
    reserved   bigint      NOT NULL DEFAULT 0 CONSTRAINT stock_reserved_non_negative CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);

-- One row per order ever seen, whatever happened to it, so a redelivered or
-- replayed event never reserves twice.
--   held      units counted in stock.reserved until expires_at
--   committed units sold (taken off on_hand)
--   released  units given back (payment failed, order cancelled, expired)
--   rejected  nothing was held: some line was not available
CREATE TABLE reservations (
    order_id       text        PRIMARY KEY,
    user_id        text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('held', 'committed', 'released', 'rejected')),
    expires_at     timestamptz,
    release_reason text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'held' OR expires_at IS NOT NULL)
);

CREATE INDEX reservations_held_by_deadline ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_lines (
    order_id text    NOT NULL REFERENCES reservations (order_id),
    sku      text    NOT NULL REFERENCES products (sku),
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

-- The seeded catalog: five products in stock and one sold out.
INSERT INTO products (sku, name, description, price_minor, currency) VALUES
    ('SKU-MUG-001',    'Enamel mug',        'Camp mug, 350 ml, white with blue rim', 1299, 'EUR'),
    ('SKU-TEE-001',    'Organic T-shirt',   'Heavyweight cotton tee, navy',          2499, 'EUR'),
    ('SKU-CAP-001',    'Canvas cap',        'Six-panel cap, olive',                  1899, 'EUR'),
    ('SKU-BAG-001',    'Tote bag',          'Recycled canvas tote, 12 l',            1599, 'EUR'),
    ('SKU-PEN-001',    'Brass pen',         'Refillable ballpoint, black ink',        899, 'EUR'),
    ('SKU-POSTER-001', 'Limited poster',    'Signed print, 50x70 cm (sold out)',     4900, 'EUR');

INSERT INTO stock (sku, on_hand) VALUES
    ('SKU-MUG-001', 100),
    ('SKU-TEE-001', 50),
    ('SKU-CAP-001', 25),
    ('SKU-BAG-001', 10),
    ('SKU-PEN-001', 500),
    ('SKU-POSTER-001', 0);
