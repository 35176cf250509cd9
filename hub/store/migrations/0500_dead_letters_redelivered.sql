-- A malformed message redelivered by the broker (the hub committed its dead letter, then died
-- before acknowledging) must not be dead-lettered twice. Redeliveries carry MQTT's DUP flag;
-- the writer then inserts the dead letter only if the same topic and bytes are not there yet,
-- and this index makes that look-up cheap. Fresh messages with the same bytes still count.
CREATE INDEX dead_letters_topic_payload ON dead_letters (topic, md5(payload));
