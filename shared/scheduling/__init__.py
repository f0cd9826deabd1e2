"""Schedules: NCRONTAB expressions as the Functions host reads them, and schedule slots."""
