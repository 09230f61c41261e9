"""siq fit: the most accurate per-layer configuration within a flash, RAM and instruction budget."""
