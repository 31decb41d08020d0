-- Browsing the catalog: every product has a category, and a text search
-- over its name, description, category and SKU, indexed so a search does
-- not read the whole table.

ALTER TABLE products
    ADD COLUMN category text NOT NULL DEFAULT 'general'
        CONSTRAINT products_category_format CHECK (category ~ '^[a-z][a-z0-9-]{0,39}$');

-- 'simple': no stemming or stop words, so a prefix of any word matches
-- (`mu:*` finds "mug"), whatever the language of the text.
ALTER TABLE products
    ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', name || ' ' || description || ' ' || category || ' ' || sku)
    ) STORED;

CREATE INDEX products_search ON products USING gin (search);
CREATE INDEX products_by_category ON products (category, sku);

UPDATE products SET category = CASE sku
    WHEN 'SKU-MUG-001'    THEN 'kitchen'
    WHEN 'SKU-TEE-001'    THEN 'apparel'
    WHEN 'SKU-CAP-001'    THEN 'apparel'
    WHEN 'SKU-BAG-001'    THEN 'bags'
    WHEN 'SKU-PEN-001'    THEN 'stationery'
    WHEN 'SKU-POSTER-001' THEN 'prints'
    ELSE category
END;

-- The rest of the seeded catalog: six categories of a small shop.
INSERT INTO products (sku, name, description, price_minor, currency, category) VALUES
    ('SKU-MUG-002',    'Stoneware mug',      'Hand-glazed, 300 ml, speckled sand',         1699, 'EUR', 'kitchen'),
    ('SKU-BOWL-001',   'Ramen bowl',         'Deep porcelain bowl, 900 ml',                1899, 'EUR', 'kitchen'),
    ('SKU-KNIFE-001',  'Paring knife',       'Carbon steel, beech handle',                 2999, 'EUR', 'kitchen'),
    ('SKU-BOARD-001',  'Olive wood board',   'Cutting board, 35x20 cm',                    3499, 'EUR', 'kitchen'),
    ('SKU-KETTLE-001', 'Enamel kettle',      'Stovetop kettle, 1.5 l, cream',              4599, 'EUR', 'kitchen'),
    ('SKU-TEA-001',    'Loose-leaf tea tin', 'Sencha, 100 g, airtight tin',                1299, 'EUR', 'kitchen'),
    ('SKU-TEE-002',    'Linen shirt',        'Relaxed fit, washed linen, sand',            5900, 'EUR', 'apparel'),
    ('SKU-SOCK-001',   'Wool socks',         'Merino blend, two pairs, charcoal',          1499, 'EUR', 'apparel'),
    ('SKU-SCARF-001',  'Knitted scarf',      'Lambswool, 180 cm, rust',                    3900, 'EUR', 'apparel'),
    ('SKU-BEANIE-001', 'Ribbed beanie',      'Recycled wool, forest green',                2200, 'EUR', 'apparel'),
    ('SKU-APRON-001',  'Work apron',         'Waxed canvas, leather straps',               4500, 'EUR', 'apparel'),
    ('SKU-BAG-002',    'Roll-top backpack',  'Waterproof, 20 l, black',                    8900, 'EUR', 'bags'),
    ('SKU-BAG-003',    'Market net bag',     'Cotton string bag, folds flat',               799, 'EUR', 'bags'),
    ('SKU-BAG-004',    'Leather pouch',      'Zip pouch for pens and cables',              2900, 'EUR', 'bags'),
    ('SKU-BAG-005',    'Weekender',          'Canvas and leather, 40 l',                  12900, 'EUR', 'bags'),
    ('SKU-PEN-002',    'Fountain pen',       'Steel nib, medium, matte black',             3400, 'EUR', 'stationery'),
    ('SKU-NOTE-001',   'Dot-grid notebook',  'A5, 192 pages, lay-flat binding',            1900, 'EUR', 'stationery'),
    ('SKU-NOTE-002',   'Pocket notebooks',   'Three A6 notebooks, kraft covers',            999, 'EUR', 'stationery'),
    ('SKU-INK-001',    'Ink bottle',         'Blue-black fountain pen ink, 50 ml',         1250, 'EUR', 'stationery'),
    ('SKU-PENCIL-001', 'Pencil set',         'Six graphite pencils, HB to 6B',              850, 'EUR', 'stationery'),
    ('SKU-RULER-001',  'Brass ruler',        '15 cm, engraved metric scale',               1600, 'EUR', 'stationery'),
    ('SKU-PRINT-001',  'Mountain print',     'Risograph print, A3, two colours',           2500, 'EUR', 'prints'),
    ('SKU-PRINT-002',  'Harbour print',      'Giclée print, 30x40 cm',                     3500, 'EUR', 'prints'),
    ('SKU-PRINT-003',  'Botanical print',    'Fern study, A4, archival paper',             1800, 'EUR', 'prints'),
    ('SKU-CARD-001',   'Postcard set',       'Twelve illustrated postcards',                900, 'EUR', 'prints'),
    ('SKU-CANDLE-001', 'Soy candle',         'Cedar and smoke, 40 hours',                  2400, 'EUR', 'home'),
    ('SKU-THROW-001',  'Wool throw',         'Herringbone blanket, 130x180 cm',            8900, 'EUR', 'home'),
    ('SKU-VASE-001',   'Bud vase',           'Hand-blown glass, smoke grey',               1900, 'EUR', 'home'),
    ('SKU-PLANT-001',  'Plant pot',          'Terracotta, 14 cm, with saucer',             1500, 'EUR', 'home'),
    ('SKU-CLOCK-001',  'Wall clock',         'Silent movement, oak frame, 30 cm',          5400, 'EUR', 'home');

INSERT INTO stock (sku, on_hand) VALUES
    ('SKU-MUG-002', 60), ('SKU-BOWL-001', 40), ('SKU-KNIFE-001', 30), ('SKU-BOARD-001', 20),
    ('SKU-KETTLE-001', 15), ('SKU-TEA-001', 80), ('SKU-TEE-002', 25), ('SKU-SOCK-001', 120),
    ('SKU-SCARF-001', 30), ('SKU-BEANIE-001', 45), ('SKU-APRON-001', 20), ('SKU-BAG-002', 12),
    ('SKU-BAG-003', 200), ('SKU-BAG-004', 35), ('SKU-BAG-005', 8), ('SKU-PEN-002', 40),
    ('SKU-NOTE-001', 150), ('SKU-NOTE-002', 150), ('SKU-INK-001', 60), ('SKU-PENCIL-001', 90),
    ('SKU-RULER-001', 50), ('SKU-PRINT-001', 30), ('SKU-PRINT-002', 20), ('SKU-PRINT-003', 30),
    ('SKU-CARD-001', 100), ('SKU-CANDLE-001', 70), ('SKU-THROW-001', 10), ('SKU-VASE-001', 40),
    ('SKU-PLANT-001', 60), ('SKU-CLOCK-001', 15);
