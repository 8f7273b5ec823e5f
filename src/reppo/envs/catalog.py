"""The task catalog: every environment name reppo knows, by family, with no framework import.

The env registries (`reppo.envs.registry` for Playground, `reppo.envs.maniskill` for
ManiSkill3) build the environments; listing names, checking them and grouping them into suites
and report families needs only this module, so `reppo envs`, `reppo report` and planning a
sweep stay fast and work without JAX or torch.
"""

from __future__ import annotations

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

# Each family's tasks, in `reppo envs` order; the backends that train them.
FAMILIES: dict[str, tuple[str, ...]] = {"dm_control": DMC_TASKS, "maniskill": MANISKILL_TASKS}
FAMILY_BACKENDS: dict[str, tuple[str, ...]] = {
    "dm_control": ("jax", "torch"),
    "maniskill": ("torch",),
}


# What a family's tasks need installed: (the reppo extra, what else to know), for `reppo envs`.
FAMILY_EXTRAS: dict[str, tuple[str, str]] = {
    "dm_control": ("jax", "with --backend torch the torch extra, which includes it"),
    "maniskill": ("maniskill", "and a Vulkan driver: scripts/install-system-deps.sh, "
                               "docs/maniskill.md"),
}
FAMILY_TITLES = {"dm_control": "MuJoCo Playground DM Control", "maniskill": "ManiSkill3"}


def list_envs(family: str | None = None) -> list[str]:
    """Environment names: Playground's DM Control tasks (either backend) and, for the torch
    backend, the ManiSkill3 tasks; `family` ('dm_control' or 'maniskill') picks one group."""
    if family is not None:
        return list(FAMILIES[family])
    return [name for tasks in FAMILIES.values() for name in tasks]


def family_of(name: str) -> str | None:
    """The family of task `name`, or None for a name the catalog does not know."""
    return next((family for family, tasks in FAMILIES.items() if name in tasks), None)
