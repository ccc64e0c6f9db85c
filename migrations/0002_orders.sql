-- Scenario "disconnect": an order and its items. Both variants share the tables, told apart by `variant`.
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    variant    text NOT NULL CHECK (variant IN ('broken', 'fixed')),
    customer   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_variant_idx ON orders (variant);

CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku      text NOT NULL,
    qty      integer NOT NULL CHECK (qty > 0)
);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);

DO $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT ON orders, order_items TO %I, %I',
                   pitfalls_role('broken'), pitfalls_role('fixed'));
    EXECUTE format('GRANT USAGE ON SEQUENCE orders_id_seq TO %I, %I',
                   pitfalls_role('broken'), pitfalls_role('fixed'));
END
$$;
