"""The benchmark grid: suites, hyperparameters, the cell runner, launchers, records and merge."""
