"""flamejax benchmarks: ``python -m benchmarks [--quick | --full] [--only NAME ...]`` (see ``__main__``)."""

# flamejax sets its XLA flags only if it is imported before JAX; the environment it leaves is inherited by the
# benchmarks that run as subprocesses, so every number is measured as users run the library.
import flamejax  # noqa: F401
