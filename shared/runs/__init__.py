"""Patch runs: accept a request, dispatch its machines, drive each machine's operation to its end."""
