"""What the SQL stores share: projections, reads and the group-commit writer."""
