-- The PostgreSQL schema that kundenwert wrote before migrations (main at 045e594: Store() plus
-- the serving modules' create_all), from pg_dump --schema-only --no-owner. Frozen: do not edit.

CREATE FUNCTION public.kw_live_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF current_setting('kundenwert.bulk_write', true) = 'on' THEN
        RETURN NULL;  -- Store.write logs once for the whole transaction
    END IF;
    PERFORM pg_advisory_xact_lock(1802988649);  -- sequence order = commit order
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO kw_live_changes(customer_id) VALUES (OLD.customer_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
        INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TABLE public.attribute_definitions (
    name character varying(200) NOT NULL,
    kind character varying(10) NOT NULL
);

CREATE TABLE public.complaints (
    complaint_id character varying(200) NOT NULL,
    customer_id character varying(200) NOT NULL,
    opened_at timestamp with time zone NOT NULL,
    closed_at timestamp with time zone,
    category text,
    severity integer,
    extra text
);

COMMENT ON COLUMN public.complaints.extra IS 'unknown columns of the input, as JSON';

CREATE TABLE public.consents (
    customer_id character varying(200) NOT NULL,
    channel text NOT NULL,
    granted boolean NOT NULL,
    recorded_at timestamp with time zone NOT NULL,
    double_opt_in boolean,
    source text,
    extra text
);

COMMENT ON COLUMN public.consents.extra IS 'unknown columns of the input, as JSON';

CREATE TABLE public.contacts (
    contact_id character varying(200) NOT NULL,
    customer_id character varying(200) NOT NULL,
    contacted_at timestamp with time zone NOT NULL,
    channel text NOT NULL,
    direction text NOT NULL,
    campaign_id character varying(200),
    action_id character varying(200),
    is_control boolean,
    outcome text,
    topic text,
    extra text
);

COMMENT ON COLUMN public.contacts.extra IS 'unknown columns of the input, as JSON';

CREATE TABLE public.customer_attributes (
    customer_id character varying(200) NOT NULL,
    name character varying(200) NOT NULL,
    number double precision,
    text text
);

CREATE TABLE public.customers (
    customer_id character varying(200) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    customer_type text NOT NULL,
    birth_year integer,
    gender text,
    postal_code text,
    region text
);

CREATE TABLE public.imports (
    import_id integer NOT NULL,
    imported_at timestamp with time zone NOT NULL,
    mode character varying(10) NOT NULL,
    rows text NOT NULL
);

COMMENT ON COLUMN public.imports.rows IS 'rows written per table, JSON';

CREATE SEQUENCE public.imports_import_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.imports_import_id_seq OWNED BY public.imports.import_id;

CREATE TABLE public.kw_api_keys (
    key_id character varying(16) NOT NULL,
    secret_sha256 character varying(64) NOT NULL,
    role character varying(32) NOT NULL,
    name character varying(200) NOT NULL,
    created_at character varying(32) NOT NULL,
    revoked boolean NOT NULL
);

CREATE TABLE public.kw_decisions (
    decision_id character varying(32) NOT NULL,
    customer_id character varying(64) NOT NULL,
    created_at character varying(32) NOT NULL,
    score_run character varying(32) NOT NULL,
    suggestions text NOT NULL
);

CREATE TABLE public.kw_feedback (
    event_id character varying(128) NOT NULL,
    payload_sha256 character varying(64) NOT NULL,
    decision_id character varying(32) NOT NULL,
    action_id character varying(64) NOT NULL,
    channel character varying(16) NOT NULL,
    outcome character varying(16) NOT NULL,
    occurred_at character varying(40) NOT NULL,
    received_at character varying(40) NOT NULL
);

CREATE TABLE public.kw_live_changes (
    seq bigint NOT NULL,
    customer_id character varying(200)
);

COMMENT ON COLUMN public.kw_live_changes.customer_id IS 'NULL: any customer';

CREATE SEQUENCE public.kw_live_changes_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.kw_live_changes_seq_seq OWNED BY public.kw_live_changes.seq;

CREATE TABLE public.kw_score_runs (
    run_id character varying(32) NOT NULL,
    scored_at character varying(32) NOT NULL,
    cutoff character varying(32) NOT NULL,
    customers integer NOT NULL,
    models text NOT NULL,
    table_name character varying(64) NOT NULL
);

CREATE TABLE public.kw_target_list_members (
    list_id character varying(32) NOT NULL,
    "position" integer NOT NULL,
    customer_id character varying(64) NOT NULL,
    "group" character varying(8) NOT NULL,
    action_id character varying(64) NOT NULL,
    score double precision NOT NULL,
    propensity double precision NOT NULL,
    expected_value double precision NOT NULL,
    cost double precision NOT NULL
);

CREATE TABLE public.kw_target_lists (
    list_id character varying(32) NOT NULL,
    created_at character varying(40) NOT NULL,
    request text NOT NULL,
    summary text NOT NULL
);

CREATE TABLE public.offers (
    offer_id character varying(200) NOT NULL,
    customer_id character varying(200) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    amount double precision NOT NULL,
    status text NOT NULL,
    closed_at timestamp with time zone,
    lost_reason text,
    extra text
);

COMMENT ON COLUMN public.offers.extra IS 'unknown columns of the input, as JSON';

CREATE TABLE public.products (
    product_id character varying(200) NOT NULL,
    category text NOT NULL,
    name text,
    price double precision,
    extra text
);

COMMENT ON COLUMN public.products.extra IS 'unknown columns of the input, as JSON';

CREATE TABLE public.purchases (
    purchase_id character varying(200) NOT NULL,
    customer_id character varying(200) NOT NULL,
    purchased_at timestamp with time zone NOT NULL,
    product_id character varying(200),
    category text,
    quantity double precision,
    amount double precision NOT NULL,
    margin double precision,
    discount double precision,
    sales_channel text,
    extra text
);

COMMENT ON COLUMN public.purchases.extra IS 'unknown columns of the input, as JSON';

ALTER TABLE ONLY public.imports ALTER COLUMN import_id SET DEFAULT nextval('public.imports_import_id_seq'::regclass);

ALTER TABLE ONLY public.kw_live_changes ALTER COLUMN seq SET DEFAULT nextval('public.kw_live_changes_seq_seq'::regclass);

ALTER TABLE ONLY public.attribute_definitions
    ADD CONSTRAINT attribute_definitions_pkey PRIMARY KEY (name);

ALTER TABLE ONLY public.complaints
    ADD CONSTRAINT complaints_pkey PRIMARY KEY (complaint_id);

ALTER TABLE ONLY public.consents
    ADD CONSTRAINT consents_pkey PRIMARY KEY (customer_id, channel, recorded_at);

ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_pkey PRIMARY KEY (contact_id);

ALTER TABLE ONLY public.customer_attributes
    ADD CONSTRAINT customer_attributes_pkey PRIMARY KEY (customer_id, name);

ALTER TABLE ONLY public.customers
    ADD CONSTRAINT customers_pkey PRIMARY KEY (customer_id);

ALTER TABLE ONLY public.imports
    ADD CONSTRAINT imports_pkey PRIMARY KEY (import_id);

ALTER TABLE ONLY public.kw_api_keys
    ADD CONSTRAINT kw_api_keys_pkey PRIMARY KEY (key_id);

ALTER TABLE ONLY public.kw_decisions
    ADD CONSTRAINT kw_decisions_pkey PRIMARY KEY (decision_id);

ALTER TABLE ONLY public.kw_feedback
    ADD CONSTRAINT kw_feedback_pkey PRIMARY KEY (event_id);

ALTER TABLE ONLY public.kw_live_changes
    ADD CONSTRAINT kw_live_changes_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY public.kw_score_runs
    ADD CONSTRAINT kw_score_runs_pkey PRIMARY KEY (run_id);

ALTER TABLE ONLY public.kw_target_lists
    ADD CONSTRAINT kw_target_lists_pkey PRIMARY KEY (list_id);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_pkey PRIMARY KEY (offer_id);

ALTER TABLE ONLY public.products
    ADD CONSTRAINT products_pkey PRIMARY KEY (product_id);

ALTER TABLE ONLY public.purchases
    ADD CONSTRAINT purchases_pkey PRIMARY KEY (purchase_id);

CREATE INDEX ix_complaints_customer ON public.complaints USING btree (customer_id);

CREATE INDEX ix_contacts_customer_time ON public.contacts USING btree (customer_id, contacted_at);

CREATE INDEX ix_kw_feedback_decision_id ON public.kw_feedback USING btree (decision_id);

CREATE INDEX ix_kw_target_list_members_list_id ON public.kw_target_list_members USING btree (list_id);

CREATE INDEX ix_offers_customer ON public.offers USING btree (customer_id);

CREATE INDEX ix_purchases_customer_time ON public.purchases USING btree (customer_id, purchased_at);

CREATE TRIGGER kw_live_consents AFTER INSERT OR DELETE OR UPDATE ON public.consents FOR EACH ROW EXECUTE FUNCTION public.kw_live_change();

CREATE TRIGGER kw_live_contacts AFTER INSERT OR DELETE OR UPDATE ON public.contacts FOR EACH ROW EXECUTE FUNCTION public.kw_live_change();

ALTER TABLE ONLY public.complaints
    ADD CONSTRAINT complaints_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

ALTER TABLE ONLY public.consents
    ADD CONSTRAINT consents_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

ALTER TABLE ONLY public.customer_attributes
    ADD CONSTRAINT customer_attributes_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

ALTER TABLE ONLY public.customer_attributes
    ADD CONSTRAINT customer_attributes_name_fkey FOREIGN KEY (name) REFERENCES public.attribute_definitions(name);

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

ALTER TABLE ONLY public.purchases
    ADD CONSTRAINT purchases_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES public.customers(customer_id);

