"""paperzoo core."""
