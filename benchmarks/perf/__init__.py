"""Performance benchmark (`make perf` = `tiltbench perf`): throughput, compile time and recompilation,
network FLOP/s against the matmul peak, harness overhead against hand-fused references, and the
cost-to-accuracy table. See `benchmarks.perf.report`."""
