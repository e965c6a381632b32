"""Per-provider attention lowering: rules (one per file), the registry of candidates per target,
measurement of the candidates, and the pass that applies the choice."""
