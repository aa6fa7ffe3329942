"""Stack configuration and the per-stack composition of components."""
