"""ManiSkill3's PPO baseline through rsl-rl-lib: `agent` (settings, presets, the learner) <-
`run` (a run into a REPPO-format run directory, evaluated with the project's protocol)."""
