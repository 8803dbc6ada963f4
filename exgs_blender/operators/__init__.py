"""Blender operators of the ExGS extension."""
