-- `voiding`: an ambiguous charge is being voided. Recorded before the
-- provider is asked, so a crash after the void can never lead to a second
-- charge attempt (whose answer would be the original, refunded, charge).
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'voiding', 'succeeded', 'failed', 'refunded', 'cancelled'));
