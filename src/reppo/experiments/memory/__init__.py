"""Memory (`reppo memory`): what REPPO keeps per iteration against what an off-policy replay
buffer keeps.

Paper section 4.6 compares REPPO with FastTD3 holding a replay buffer of 10,485,760 or 32,768
transitions. `reppo memory` computes, for one task and preset:

- REPPO's rollout storage: the arrays one iteration collects and trains on, with shapes taken
  from the real code (`jax.eval_shape` of `Agent.rollout` and of the TD(lambda) pass, so nothing
  is computed and nothing is assumed about the layout);
- the minibatch copy that `Agent.update` gathers from that storage once per epoch (transient);
- the bytes of an off-policy replay buffer of each size on the same task, assuming that every
  transition stores obs, next obs, action, reward, a done and a truncation flag, all float32;
- for reference, REPPO's parameters and optimizer state;
- FastTD3's replay buffer with each of those sizes as its real code allocates it, and the
  measured peak of a short FastTD3 run with each (`fasttd3`);
- the measured peak memory of a short REPPO run in a fresh process, after set-up and
  compilation: the device allocator's `peak_bytes_in_use` on a GPU; on a CPU (where JAX has no
  memory statistics) the process's RSS before the iterations and its peak during them (Linux's
  reset high-water mark) and over the whole process (`getrusage`). RSS also counts Python,
  JAX, the simulator and memory the process freed but kept.

The parts: `storage` (byte counts from the real shapes), `measured` (the measuring child:
`python -m reppo.experiments.memory.measured --measure CONFIG_JSON --iterations N` prints one
line starting with `REPPO_MEMORY ` followed by JSON), `peak` (peak memory of a piece of work),
`fasttd3` (FastTD3's buffers and runs).
"""
