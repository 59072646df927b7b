"""privrank: privacy-preserving recommendation and ranking.

Layers, top to bottom (each imports only the layers below it; checked by the import-linter
contracts in ``pyproject.toml``): ``cli`` → ``distributed`` → ``serving`` → ``tuning`` →
``workflow`` → ``testing`` → ``models`` → ``privacy`` → ``metrics`` → ``data`` → the base modules
(``database``, ``atomic``, ``settings``, ``errors``). See the README for the two set-up commands.
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
