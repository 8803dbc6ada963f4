"""Rasterisation of Gaussian scenes: gsplat on CUDA, our numba-compiled CPU backend otherwise."""

from exgs_core.render.rasterize import BACKENDS, RenderOutput, rasterize, render, render_views, resolve_backend

__all__ = ["BACKENDS", "RenderOutput", "rasterize", "render", "render_views", "resolve_backend"]
