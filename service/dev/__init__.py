"""Running the whole service on one machine: `LocalSystem` (Redis, API, workers as child processes)
for `make demo`, `make serve`, the tests and the benchmarks; the service half of `radreport
demo`."""
