"""Panels of the ExGS extension."""
