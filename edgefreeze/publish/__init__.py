"""Publish: the manifest and report, and the atomic move of an accepted bundle into place
(or, when the gate refused it, only its report beside where it would have gone)."""

from __future__ import annotations

from pathlib import Path

from edgefreeze.publish.claim import DestinationClaim
from edgefreeze.publish.html_report import render_html
from edgefreeze.publish.record import StageRecords, manifest_for
from edgefreeze.publish.report import render_report
from edgefreeze.publish.staging import (
    HTML_REPORT,
    REPORT,
    Staging,
    check_destination,
    destination_for,
)
from edgefreeze.runtime.manifest import GateRefused, Manifest

__all__ = [
    "DestinationClaim",
    "StageRecords",
    "Staging",
    "check_destination",
    "destination_for",
    "manifest_for",
    "publish_or_refuse",
]


def publish_or_refuse(staging: Staging, manifest: Manifest, sign_key: Path | None = None) -> Path:
    """Ship the staged bundle if the gate passed it (signed with `sign_key` first, so it
    appears signed or not at all); else keep its manifest and report at
    DESTINATION.rejected and raise `GateRefused` (exit 1)."""
    reports = {REPORT: render_report(manifest), HTML_REPORT: render_html(manifest)}
    if not manifest.gate.passed:
        rejected = staging.reject(manifest, reports)
        raise GateRefused(
            "gate refused the build: "
            + "; ".join(manifest.gate.failures)
            + f" (report: {rejected / REPORT})",
            manifest,
            rejected,
        )
    return staging.publish(manifest, reports, sign_key)
