"""Repository functions: the only code that commits. Routes stay thin and call these."""
