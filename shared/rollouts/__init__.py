"""Safe rollouts: waves, concurrency limits, an error budget, one patch set, cancel and resume.

A run with a `rollout` does not fan out at once: its machines wait `Queued` until the controller
admits them (controller.py), wave by wave, within the concurrency limits, and stops admitting when
the error budget is spent.
"""
