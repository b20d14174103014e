"""deliverability."""
