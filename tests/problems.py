"""The reference problems of the inner-optimiser tests live in the package (``farzi_lightning.testing``), so
benchmarks use them too."""

from farzi_lightning.testing import *  # noqa: F403
from farzi_lightning.testing import mlp_problem, rel_error, transformer_problem  # noqa: F401
