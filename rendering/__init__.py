"""Pure renderers: stack config in, file text out. No Pulumi imports, no I/O."""
