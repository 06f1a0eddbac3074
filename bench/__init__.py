"""askq benchmarks: `python -m bench --help`."""
