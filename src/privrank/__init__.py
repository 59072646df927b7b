"""privrank: privacy-preserving recommendation and ranking.

Data flows ``data`` → ``models`` → ``metrics``; ``privacy`` composes with models; ``serving``,
``federated`` and ``distributed`` sit on top. See the README for the two set-up commands.
"""

from privrank.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    NotTrainedError,
    PrivacyBudgetExceeded,
    PrivrankError,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "NotTrainedError",
    "PrivacyBudgetExceeded",
    "PrivrankError",
    "__version__",
]
