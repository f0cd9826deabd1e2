"""Fleet assessments: discovering VMs in scopes, scheduled sweeps, results history and compliance.

The assessPatches operation itself runs on the run machinery (shared/runs): an assessment is a run
whose operation is assessPatches. This package adds what only assessments need.
"""
