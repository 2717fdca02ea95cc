"""Compliance: what an auditor or an on-call engineer asks of the rotator.

scan (the daemon's findings: overdue, unused, unmanaged keys), inventory
(`status`), report (`report`: markdown, csv, json, html) and alerts (findings
and final failures pushed to webhooks). docs/COMPLIANCE.md explains them.
"""
