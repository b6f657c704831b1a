"""The demo's three models: teacher T, pruned base B, and B distilled from T (student S).

Only light modules are imported here; torch and transformers load when a model is built.
"""

from __future__ import annotations

from harness.demo.prepare import DEFAULT_RECIPE, DemoModels, DemoRecipe, prepare_demo

__all__ = ["DEFAULT_RECIPE", "DemoModels", "DemoRecipe", "prepare_demo"]
