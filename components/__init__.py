"""ComponentResources: one infrastructure concern each, from typed config and rendered text."""
