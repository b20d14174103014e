"""Read models: the figures every page and metric reads (subscriber counts, kept counts, send
progress, deliverability), counts only, never an address."""
