"""The loop's checkpoints (reppo.loop.checkpointing): one metadata record for both backends, and the
same refusals on restore, whatever the backend's state looks like."""

from __future__ import annotations

import numpy as np
import pytest

from reppo.loop.checkpointing import checkpoint_metadata, restore_state, save_state
from reppo.loop.seam import StateMismatchError
from reppo.runs import CheckpointError, latest_checkpoint, load_checkpoint
from tests.conftest import TINY


class _FakeTrainer:
    """A backend reduced to what the checkpoints need: its state is (iteration, weights)."""

    def __init__(self, backend: str = "jax", config=TINY) -> None:
        self.backend = backend
        self.config = config

    def policy_sizes(self) -> tuple[int, int]:
        return 5, 1

    def iteration_of(self, state) -> int:
        return state[0]

    def state_arrays(self, state) -> dict[str, np.ndarray]:
        return {"actor/w": state[1][None]}

    def load_state(self, arrays, iteration):
        if set(arrays) != {"actor/w"}:
            raise StateMismatchError(f"unexpected arrays {sorted(arrays)}")
        return iteration, arrays["actor/w"][0]


def test_metadata_is_built_by_the_loop_from_the_trainer():
    meta = checkpoint_metadata(_FakeTrainer("torch"), 3, 12.5)
    assert meta == {
        "backend": "torch", "env_steps": 3 * TINY.steps_per_iteration, "iteration": 3,
        "wall_time": 12.5, "num_seeds": TINY.num_seeds, "obs_size": 5, "action_size": 1,
        "config": TINY.to_dict(),
    }


def test_save_then_restore_gives_back_the_state_and_its_metadata(tmp_path):
    trainer = _FakeTrainer()
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = save_state(trainer, tmp_path, (2, weights), wall_time=1.0)
    assert path == latest_checkpoint(tmp_path)
    arrays, meta = load_checkpoint(path)
    assert set(arrays) == {"actor/w"} and meta["env_steps"] == 2 * TINY.steps_per_iteration
    (iteration, restored), meta = restore_state(trainer, path)
    assert iteration == 2 and np.array_equal(restored, weights)
    assert meta["backend"] == "jax" and meta["obs_size"] == 5


@pytest.mark.parametrize(("writer", "reader"), [("jax", "torch"), ("torch", "jax")])
def test_a_checkpoint_of_the_other_backend_is_refused_with_the_fix(tmp_path, writer, reader):
    path = save_state(_FakeTrainer(writer), tmp_path, (1, np.zeros(2, np.float32)), 0.0)
    with pytest.raises(CheckpointError, match=f"written by the {writer} backend.*--backend "
                                              f"{writer}"):
        restore_state(_FakeTrainer(reader), path)


def test_arrays_that_do_not_fit_are_a_checkpoint_error_naming_the_file(tmp_path):
    path = save_state(_FakeTrainer(), tmp_path, (1, np.zeros(2, np.float32)), 0.0)

    class OtherConfig(_FakeTrainer):
        def load_state(self, arrays, iteration):
            raise StateMismatchError("actor/w has shape (2,), expected (4,)")

    with pytest.raises(CheckpointError, match=r"does not match this run's config \(actor/w"):
        restore_state(OtherConfig(), path)
