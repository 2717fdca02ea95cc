"""Compliance: what an auditor or an on-call engineer asks of the rotator.

scan (the daemon's findings: overdue, unused, unmanaged keys), inventory
(`status`), report (`report`: markdown, csv, json, html) and alerts (findings
and final failures pushed to webhooks). docs/COMPLIANCE.md explains them.
"""

from rotator.compliance.scan import ComplianceScanner  # the daemon's import path until the layout's phase 2

__all__ = ["ComplianceScanner"]
