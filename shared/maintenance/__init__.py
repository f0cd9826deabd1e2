"""Maintenance schedules: Azure's InGuestPatch maintenance configurations, their assignments, and
windows that open exactly once. A window opens as an install run on the run machinery (shared/runs).
"""
