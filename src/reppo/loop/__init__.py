"""The training loop both backends share.

`runner` is the loop: it resolves nothing itself, opens the run directory, and runs chunks of
iterations, evaluating, logging and checkpointing on their cadence (`chunks`), writing and
reading checkpoints (`checkpointing`), stopping on signals and faults; `processes` says which
processes of a run write what; `callbacks` is what `train` calls with each record. `seam` is
the one thing a backend implements and imports (the `Trainer` protocol, `EvalReport`,
`TrainResult`, `NonFiniteError`).
"""
