#!/usr/bin/env bash
# System packages the ManiSkill3 environments need: a Vulkan driver that SAPIEN accepts.
#
# SAPIEN (ManiSkill's simulator) creates a Vulkan device even for state observations. Without
# a GPU driver, Mesa's software rasterizer lavapipe does the job, but only a recent one:
# Debian bookworm's Mesa 22.3 is refused ("failed to find a rendering device"), while Mesa 25.0
# from bookworm-backports works. Installing it also moves Mesa's OpenGL packages to 25.0 (they
# share one version); MuJoCo's EGL rendering works with them.
#
# Idempotent and non-interactive (safe in CI): does nothing when a usable driver is already
# present. Without root or apt it prints what to install and exits 0; the ManiSkill tests then
# skip with that reason. The check asks SAPIEN itself when it is importable (set PYTHON to pick
# the interpreter); before `pip install`, it looks for an NVIDIA ICD or Mesa >= 25 instead.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
MIN_MESA=25  # known to work with SAPIEN 3.0.3; 22.3 is refused

say() { echo "install-system-deps: $*"; }

# 0: SAPIEN found a device; 1: it did not; 2: SAPIEN is not importable (cannot tell).
probe_sapien() {
    "$PYTHON" -W ignore - >/dev/null 2>&1 <<'PY'
import sys
try:
    import sapien
except Exception:
    sys.exit(2)
try:
    sapien.render.RenderSystem()
except Exception:
    sys.exit(1)
PY
}

# Without SAPIEN: an NVIDIA ICD, or a Mesa Vulkan driver package recent enough.
driver_present() {
    local icd
    for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
        [[ -f $icd ]] && return 0
    done
    command -v dpkg-query >/dev/null 2>&1 || return 1
    local v
    v=$(dpkg-query -W -f='${Status} ${Version}' mesa-vulkan-drivers 2>/dev/null) || return 1
    [[ $v == "install ok installed "* ]] || return 1
    dpkg --compare-versions "${v##* }" ge "$MIN_MESA"
}

usable() {
    local rc=0
    probe_sapien || rc=$?
    case $rc in
        0) return 0 ;;
        1) return 1 ;;
        *) driver_present ;;
    esac
}

if usable; then
    say "a Vulkan driver is present; nothing to do."
    exit 0
fi

manual="install a Vulkan driver: on Debian bookworm, 'apt-get install -t bookworm-backports \
mesa-vulkan-drivers libvulkan1' (Mesa's lavapipe, >= $MIN_MESA); with a GPU, the NVIDIA driver."

if [[ $(id -u) -ne 0 ]]; then
    say "not root, skipping. As root, $manual"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not found, skipping. Please $manual"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
# shellcheck source=/dev/null
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
target=()
if [[ $codename == bookworm ]]; then
    shopt -s nullglob
    sources=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    if ! grep -qsE '^[^#]*bookworm-backports' "${sources[@]}"; then
        say "adding bookworm-backports to the apt sources"
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    target=(-t bookworm-backports)
fi

say "installing mesa-vulkan-drivers and libvulkan1${target:+ from ${target[1]}} (under a minute)"
if ! apt-get update -qq >/dev/null ||
    ! apt-get install -y -qq --no-install-recommends "${target[@]}" \
        mesa-vulkan-drivers libvulkan1 >/dev/null; then
    say "apt-get failed (see above; network access to the Debian mirror is needed)."
    exit 1
fi

rc=0
probe_sapien || rc=$?
case $rc in
    0) say "done: SAPIEN finds a Vulkan device." ;;
    1) say "installed, but SAPIEN still finds no Vulkan device. Please $manual" ;;
    *) say "installed $(dpkg-query -W -f='${Package} ${Version}' mesa-vulkan-drivers); SAPIEN is \
not importable with $PYTHON, so it was not checked." ;;
esac
exit 0
