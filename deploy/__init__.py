"""The deploy engine's building blocks. Pure Python: nothing here imports Pulumi."""
