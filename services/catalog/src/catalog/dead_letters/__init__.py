"""Dead letters: every event that a subscriber dropped, or gave up on after its retries, as it
arrives on the `deadletter` topic. The catalog records each one, shows them to an admin and
publishes one again on request (docs/06-key-value-or-relational.md)."""
