"""A module that raises while being imported."""

raise RuntimeError("import-time boom 5521")
