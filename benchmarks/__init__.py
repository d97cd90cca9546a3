"""tiltbench harness: metrics, suites, the grid runner, leaderboard tables and the CLI."""
