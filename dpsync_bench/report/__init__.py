"""Reading results: tables, figures, gate, exports (no torch)."""
