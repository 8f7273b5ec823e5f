"""The task catalog: every environment name reppo knows, by family, with no framework import.

The env registries (`reppo.envs.registry` for Playground, `reppo.envs.maniskill` for
ManiSkill3) build the environments; listing names, checking them and grouping them into suites
and report families needs only this module, so `reppo envs`, `reppo report` and planning a
sweep stay fast and work without JAX or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# Mirrors mujoco_playground.registry.dm_control_suite.ALL_ENVS (checked by the tests), written
# out so that listing names needs no Playground import.
DMC_TASKS: tuple[str, ...] = (
    "AcrobotSwingup",
    "AcrobotSwingupSparse",
    "BallInCup",
    "CartpoleBalance",
    "CartpoleBalanceSparse",
    "CartpoleSwingup",
    "CartpoleSwingupSparse",
    "CheetahRun",
    "FingerSpin",
    "FingerTurnEasy",
    "FingerTurnHard",
    "FishSwim",
    "HopperHop",
    "HopperStand",
    "HumanoidStand",
    "HumanoidWalk",
    "HumanoidRun",
    "PendulumSwingup",
    "PointMass",
    "ReacherEasy",
    "ReacherHard",
    "SwimmerSwimmer6",
    "WalkerRun",
    "WalkerStand",
    "WalkerWalk",
)


MANISKILL_TASKS: tuple[str, ...] = (
    "PickSingleYCB-v1",
    "PokeCube-v1",
    "PullCube-v1",
    "RollBall-v1",
    "LiftPegUpright-v1",
    "PegInsertionSide-v1",
    "UnitreeG1PlaceAppleInBowl-v1",
    "UnitreeG1TransportBox-v1",
    "OpenCabinetDrawer-v1",
    "PickCube-v1",
    "PushCube-v1",
)
# Tasks whose assets ManiSkill downloads on first use (YCB objects, PartNet-Mobility cabinets).
ASSET_TASKS: tuple[str, ...] = ("PickSingleYCB-v1", "OpenCabinetDrawer-v1")


# The paper's 23 MuJoCo Playground DM Control tasks (Playground has two more,
# PointMass and SwimmerSwimmer6, which the paper leaves out).
DMC23: tuple[str, ...] = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance",
    "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun",
    "FingerSpin", "FingerTurnEasy", "FingerTurnHard", "FishSwim", "HopperHop", "HopperStand",
    "HumanoidRun", "HumanoidStand", "HumanoidWalk", "PendulumSwingup", "ReacherEasy",
    "ReacherHard", "WalkerRun", "WalkerStand", "WalkerWalk",
)
# The paper's eight ManiSkill3 tasks plus OpenCabinetDrawer-v1 (the adapter also offers
# PickCube-v1 and PushCube-v1, which the paper does not report). Both lists are chosen
# subsets of the catalog above; the tests check that they are.
MANISKILL9: tuple[str, ...] = (
    "PickSingleYCB-v1", "PokeCube-v1", "PullCube-v1", "RollBall-v1", "LiftPegUpright-v1",
    "PegInsertionSide-v1", "UnitreeG1PlaceAppleInBowl-v1", "UnitreeG1TransportBox-v1",
    "OpenCabinetDrawer-v1",
)

@dataclass(frozen=True)
class Family:
    """A family of built-in tasks and what the package decides about it, in one place: the
    registries build its tasks, `reppo envs` lists them, reports score them."""

    title: str
    tasks: tuple[str, ...]
    backends: tuple[str, ...]  # the backends that train its tasks
    extra: str  # the reppo extra its tasks need installed
    extra_note: str  # what else to know, for `reppo envs`
    score_name: str  # what a report's normalized score of its tasks is
    # A report's score is the evaluation return / max_return; None: the success rate
    # (`eval/success_once`), already in [0, 1].
    max_return: float | None


# Every family, in `reppo envs` order.
FAMILIES: dict[str, Family] = {
    "dm_control": Family(
        title="DM Control (MuJoCo Playground)",
        tasks=DMC_TASKS,
        backends=("jax", "torch"),
        extra="jax",
        extra_note="with --backend torch the torch extra, which includes it",
        # Every episode has 1000 steps with a per-step reward in [0, 1].
        score_name="return / 1000",
        max_return=1000.0,
    ),
    "maniskill": Family(
        title="ManiSkill3",
        tasks=MANISKILL_TASKS,
        backends=("torch",),
        extra="maniskill",
        extra_note="and a Vulkan driver: scripts/install-system-deps.sh, docs/maniskill.md",
        score_name="success rate (success_once)",
        max_return=None,
    ),
}


def list_envs(family: str | None = None) -> list[str]:
    """Environment names: Playground's DM Control tasks (either backend) and, for the torch
    backend, the ManiSkill3 tasks; `family` ('dm_control' or 'maniskill') picks one group."""
    if family is not None:
        return list(FAMILIES[family].tasks)
    return [name for f in FAMILIES.values() for name in f.tasks]


def family_of(name: str) -> str | None:
    """The family of task `name`, or None for a name the catalog does not know."""
    return next((family for family, f in FAMILIES.items() if name in f.tasks), None)
