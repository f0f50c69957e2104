-- pgbench's own ceiling for the SQL of one transfer, statement for statement as the app sends it
-- for an external transfer (app/banking/services.py _execute_transfer, app/audit/services.py
-- _write_pending): the idempotency look-up, the source and target reads, the two conditional
-- updates in ascending id order, the debit and credit rows, the chain-head lock, the audit row,
-- the head update, one commit. Run by bench/run.py against a scratch copy of the small database
-- (its audit chain is not valid afterwards; the copy is dropped). -D naccounts=<accounts>.
\set src random(1, :naccounts)
\set dst random(1, :naccounts)
\set amt random(1, 200)
\set key random(1, 999999999999)
BEGIN;
SELECT id, reference FROM "transaction" WHERE initiated_by_user_id = 3 AND idempotency_key = 'pgbench.' || CAST(:key AS text);
SELECT id, account_number, owner_id, type, balance, status, created_at FROM account WHERE id = :src;
SELECT id, account_number, owner_id, type, balance, status, created_at FROM account WHERE id = :dst;
\if :src < :dst
UPDATE account SET balance = balance - :amt WHERE id = :src AND status = 'active' AND balance >= :amt;
UPDATE account SET balance = balance + :amt WHERE id = :dst AND status = 'active';
\else
UPDATE account SET balance = balance + :amt WHERE id = :dst AND status = 'active';
UPDATE account SET balance = balance - :amt WHERE id = :src AND status = 'active' AND balance >= :amt;
\endif
INSERT INTO "transaction" (account_id, sender_account_id, receiver_account_id, amount, type, description, reference, idempotency_key, timestamp, initiated_by_user_id)
  VALUES (:src, :src, :dst, :amt, 'debit', 'pgbench', 'PB-' || CAST(:key AS text), 'pgbench.' || CAST(:key AS text), now(), 3),
         (:dst, :src, :dst, :amt, 'credit', 'pgbench', 'PB-' || CAST(:key AS text), NULL, now(), 3)
  RETURNING id;
SELECT id, last_id, last_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE;
INSERT INTO audit_log (id, user_id, action, details, ip_address, timestamp, hash)
  SELECT last_id + 1, 3, 'TRANSFER_CREATED', '{"acting_role":"customer","amount":"1.00","kind":"external","reference":"PB-' || CAST(:key AS text) || '","source_account":"100000000000","source_account_id":1,"source_owner_id":3,"target_account":"100000000001","target_account_number":"100000000001","target_owner_id":4}', '127.0.0.1', now(), md5(last_hash || CAST(:key AS text)) || md5(CAST(:key AS text))
  FROM audit_chain_head WHERE id = 1;
UPDATE audit_chain_head SET last_id = last_id + 1, last_hash = md5(last_hash || CAST(:key AS text)) || md5(CAST(:key AS text)) WHERE id = 1;
END;
