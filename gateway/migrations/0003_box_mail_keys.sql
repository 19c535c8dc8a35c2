-- Each box's mail key certificate as last seen, shared by every instance: clearnet
-- mail reaching any instance is sealed to the key the box showed to any of them.
CREATE TABLE box_mail_keys (
    onion TEXT PRIMARY KEY,
    certificate TEXT NOT NULL,
    not_before BIGINT NOT NULL
);
