"""How much of a maintenance window Azure needs: shared by the timer that opens windows and the
worker that starts each VM inside one."""

from datetime import timedelta

REBOOT_RESERVE = timedelta(minutes=10)  # Azure keeps a window's last 10 minutes for a reboot
MIN_REMAINING = timedelta(minutes=25)  # less than this left: too late to start installing
