-- The SQLite schema that kundenwert wrote before migrations (main at 045e594: Store() plus the
-- serving modules' create_all), dumped from sqlite_master. Frozen: do not edit.
CREATE TABLE customers (
	customer_id VARCHAR(200) NOT NULL, 
	created_at BIGINT NOT NULL, 
	customer_type TEXT NOT NULL, 
	birth_year INTEGER, 
	gender TEXT, 
	postal_code TEXT, 
	region TEXT, 
	PRIMARY KEY (customer_id)
);
CREATE TABLE products (
	product_id VARCHAR(200) NOT NULL, 
	category TEXT NOT NULL, 
	name TEXT, 
	price FLOAT, 
	extra TEXT, 
	PRIMARY KEY (product_id)
);
CREATE TABLE attribute_definitions (
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(10) NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE imports (
	import_id INTEGER NOT NULL, 
	imported_at BIGINT NOT NULL, 
	mode VARCHAR(10) NOT NULL, 
	rows TEXT NOT NULL, 
	PRIMARY KEY (import_id)
);
CREATE TABLE kw_live_changes (
	seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	customer_id VARCHAR(200)
);
CREATE TABLE purchases (
	purchase_id VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200) NOT NULL, 
	purchased_at BIGINT NOT NULL, 
	product_id VARCHAR(200), 
	category TEXT, 
	quantity FLOAT, 
	amount FLOAT NOT NULL, 
	margin FLOAT, 
	discount FLOAT, 
	sales_channel TEXT, 
	extra TEXT, 
	PRIMARY KEY (purchase_id), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id)
);
CREATE INDEX ix_purchases_customer_time ON purchases (customer_id, purchased_at);
CREATE TABLE contacts (
	contact_id VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200) NOT NULL, 
	contacted_at BIGINT NOT NULL, 
	channel TEXT NOT NULL, 
	direction TEXT NOT NULL, 
	campaign_id VARCHAR(200), 
	action_id VARCHAR(200), 
	is_control BOOLEAN, 
	outcome TEXT, 
	topic TEXT, 
	extra TEXT, 
	PRIMARY KEY (contact_id), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id)
);
CREATE INDEX ix_contacts_customer_time ON contacts (customer_id, contacted_at);
CREATE TABLE consents (
	customer_id VARCHAR(200) NOT NULL, 
	channel TEXT NOT NULL, 
	granted BOOLEAN NOT NULL, 
	recorded_at BIGINT NOT NULL, 
	double_opt_in BOOLEAN, 
	source TEXT, 
	extra TEXT, 
	PRIMARY KEY (customer_id, channel, recorded_at), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id)
);
CREATE TABLE complaints (
	complaint_id VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200) NOT NULL, 
	opened_at BIGINT NOT NULL, 
	closed_at BIGINT, 
	category TEXT, 
	severity INTEGER, 
	extra TEXT, 
	PRIMARY KEY (complaint_id), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id)
);
CREATE INDEX ix_complaints_customer ON complaints (customer_id);
CREATE TABLE offers (
	offer_id VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200) NOT NULL, 
	created_at BIGINT NOT NULL, 
	amount FLOAT NOT NULL, 
	status TEXT NOT NULL, 
	closed_at BIGINT, 
	lost_reason TEXT, 
	extra TEXT, 
	PRIMARY KEY (offer_id), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id)
);
CREATE INDEX ix_offers_customer ON offers (customer_id);
CREATE TABLE customer_attributes (
	customer_id VARCHAR(200) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	number FLOAT, 
	text TEXT, 
	PRIMARY KEY (customer_id, name), 
	FOREIGN KEY(customer_id) REFERENCES customers (customer_id), 
	FOREIGN KEY(name) REFERENCES attribute_definitions (name)
);
CREATE TRIGGER kw_live_consents_insert AFTER INSERT ON consents BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id); END;
CREATE TRIGGER kw_live_consents_update AFTER UPDATE ON consents BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id); INSERT INTO kw_live_changes(customer_id) SELECT OLD.customer_id WHERE OLD.customer_id IS NOT NEW.customer_id; END;
CREATE TRIGGER kw_live_consents_delete AFTER DELETE ON consents BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (OLD.customer_id); END;
CREATE TRIGGER kw_live_contacts_insert AFTER INSERT ON contacts BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id); END;
CREATE TRIGGER kw_live_contacts_update AFTER UPDATE ON contacts BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (NEW.customer_id); INSERT INTO kw_live_changes(customer_id) SELECT OLD.customer_id WHERE OLD.customer_id IS NOT NEW.customer_id; END;
CREATE TRIGGER kw_live_contacts_delete AFTER DELETE ON contacts BEGIN INSERT INTO kw_live_changes(customer_id) VALUES (OLD.customer_id); END;
CREATE TABLE kw_target_lists (
	list_id VARCHAR(32) NOT NULL, 
	created_at VARCHAR(40) NOT NULL, 
	request TEXT NOT NULL, 
	summary TEXT NOT NULL, 
	PRIMARY KEY (list_id)
);
CREATE TABLE kw_target_list_members (
	list_id VARCHAR(32) NOT NULL, 
	position INTEGER NOT NULL, 
	customer_id VARCHAR(64) NOT NULL, 
	"group" VARCHAR(8) NOT NULL, 
	action_id VARCHAR(64) NOT NULL, 
	score FLOAT NOT NULL, 
	propensity FLOAT NOT NULL, 
	expected_value FLOAT NOT NULL, 
	cost FLOAT NOT NULL
);
CREATE INDEX ix_kw_target_list_members_list_id ON kw_target_list_members (list_id);
CREATE TABLE kw_feedback (
	event_id VARCHAR(128) NOT NULL, 
	payload_sha256 VARCHAR(64) NOT NULL, 
	decision_id VARCHAR(32) NOT NULL, 
	action_id VARCHAR(64) NOT NULL, 
	channel VARCHAR(16) NOT NULL, 
	outcome VARCHAR(16) NOT NULL, 
	occurred_at VARCHAR(40) NOT NULL, 
	received_at VARCHAR(40) NOT NULL, 
	PRIMARY KEY (event_id)
);
CREATE INDEX ix_kw_feedback_decision_id ON kw_feedback (decision_id);
CREATE TABLE kw_decisions (
	decision_id VARCHAR(32) NOT NULL, 
	customer_id VARCHAR(64) NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	score_run VARCHAR(32) NOT NULL, 
	suggestions TEXT NOT NULL, 
	PRIMARY KEY (decision_id)
);
CREATE TABLE kw_score_runs (
	run_id VARCHAR(32) NOT NULL, 
	scored_at VARCHAR(32) NOT NULL, 
	cutoff VARCHAR(32) NOT NULL, 
	customers INTEGER NOT NULL, 
	models TEXT NOT NULL, 
	table_name VARCHAR(64) NOT NULL, 
	PRIMARY KEY (run_id)
);
CREATE TABLE kw_api_keys (
	key_id VARCHAR(16) NOT NULL, 
	secret_sha256 VARCHAR(64) NOT NULL, 
	role VARCHAR(32) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	revoked BOOLEAN NOT NULL, 
	PRIMARY KEY (key_id)
);
