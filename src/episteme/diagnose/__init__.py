"""Diagnosis: an incident goes to specialists that get credentials only after a human
approves (DESIGN §1, §4). See docs/diagnosis.md."""
