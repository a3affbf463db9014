-- Observation's combo-* search parameters (combo-code, combo-value-quantity,
-- combo-code-value-quantity, ...) are unions of other parameters' expressions
-- (code | component.code, ...), so their rows repeated those of their parts: about one index
-- row in seven of a lab result. They are no longer stored; a search on one reads the rows of
-- its parts (store::extract, `derivations`). Their old rows are removed here. Only token and
-- quantity parameters are derived in R4. The range condition uses the value index.
DELETE FROM idx_token
 WHERE res_type = 'Observation' AND param >= 'combo-' AND param < 'combo.';
DELETE FROM idx_quantity
 WHERE res_type = 'Observation' AND param >= 'combo-' AND param < 'combo.';
