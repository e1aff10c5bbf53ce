"""Ending a rollout from live evidence: per-arm performance and the statistical decision."""
