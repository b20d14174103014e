"""Celery: the app and its tasks. Tasks are thin shells around mailing's functions."""
