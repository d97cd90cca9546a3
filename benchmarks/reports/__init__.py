"""Reports built from the grid's records: the leaderboard tables and the figures."""
