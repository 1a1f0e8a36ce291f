"""``icm compare``'s library: the comparison runner lives in ``trainers.compare`` (the command in ``icm_cli.main``
parses the arguments, prints progress and sets the exit code). Re-exported here for code that imported it from
``icm_cli.compare``."""

from trainers.compare import *  # noqa: F403
from trainers.compare import __all__  # noqa: F401
