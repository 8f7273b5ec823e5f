"""Still envs registered when this module is imported, so that child processes (a sweep's runs)
can train on them by the module-qualified names `tests.still_envs:StillA` and
`tests.still_envs:StillB`: the plumbing of a sweep end to end, with programs that build in
seconds. Import it only where a child process needs it: it registers for the whole process."""

from reppo.envs.user import register_env
from tests.fakes import StillEnv

NAMES = ("StillA", "StillB")

for _name in NAMES:
    register_env(_name, StillEnv, episode_length=100, reward_range=(0.0, 1.0))
