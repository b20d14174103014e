"""Deliverability: return paths that name a delivery, the inbound receiver for bounces, complaint
reports and `mailto:` unsubscribes, the SES webhook, and the rules that turn them into statuses."""
