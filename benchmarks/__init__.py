"""flamejax benchmarks: ``python -m benchmarks [--quick | --full] [--only NAME ...]`` (see ``__main__``)."""
