"""Reports for people outside the engine: a run's audit export (JSON, PDF) and the compliance report."""
