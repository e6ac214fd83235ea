"""Tiered memory: tiers, migration rules, archive."""
