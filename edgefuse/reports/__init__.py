"""Renderers: self-contained HTML pages (inline SVG plots) for training, analysis and ablation."""
