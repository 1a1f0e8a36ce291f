"""``icm baseline``'s library: zero-shot scoring of transformers Video-LLMs lives in ``trainers.baselines`` (the
command in ``icm_cli.main`` parses the arguments, prints progress and sets the exit code). Re-exported here for code
that imported it from ``icm_cli.baselines``."""

from trainers.baselines import *  # noqa: F403
from trainers.baselines import __all__  # noqa: F401
