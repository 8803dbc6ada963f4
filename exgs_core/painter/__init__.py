"""GaussPainter: per-frame restoration of renders of compressed scenes (model, weights, restore, data, training)."""
