"""Analyses over a workspace: coverage, agreement, projections, duplicates."""
