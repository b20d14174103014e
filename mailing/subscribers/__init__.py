"""The resident: addresses, records, sign-up and consent, preferences and frequency, their rights
(export, erasure, the purge), links and tokens, and the staff's tools that act for them (the
support desk, imports, consent refresh, the erasure journal)."""
