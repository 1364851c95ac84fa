#!/usr/bin/env bash
# Set up ddtoolbox from nothing (Python 3.11 and pip are enough) and run the demo or the tests.
#
#   ./dev.sh demo [ddtool demo options]   set up, then buffer + distil + evaluate Fashion-MNIST
#   ./dev.sh test [pytest options]        set up, then run the test suite
#   ./dev.sh setup                        only set up
#
# Setting up means: a virtual environment in .venv (or $DDTOOL_VENV), the tested package versions
# from requirements/tested.txt, ddtoolbox and every plugin under plugins/ and examples/ installed
# editable, and
# the Fashion-MNIST files (Debian package dataset-fashion-mnist) unless $DDTOOL_DATA points at a
# copy; for the tests also Chromium and its chromedriver (Debian packages chromium, chromium-driver),
# which the run report's browser test drives. Each step is skipped when it is already done, so
# rerunning is cheap.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${DDTOOL_VENV:-.venv}"
PY="${PYTHON:-python3}"

# PyPI's Linux torch wheel always brings its CUDA libraries, so the tested set takes about 6 GB
# (5.9 GiB measured). Short of that, pip stops half-way with "No space left on device" and leaves a
# broken environment; checking first turns that into one line that says what to do.
NEED_GIB=6.5

check_disk() {
    local dir verdict
    dir="$VENV"
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    verdict=$(df -Pk "$dir" | awk -v need="$NEED_GIB" 'NR == 2 { free = $4 / 1048576; if (free < need) printf "%.1f", free }')
    if [ -n "$verdict" ]; then
        echo "dev.sh: installing the tested packages into $VENV needs about $NEED_GIB GiB free, but its disk has $verdict GiB; free some space, or set DDTOOL_VENV to a folder on a larger disk" >&2
        exit 2
    fi
}

setup_python() {
    local plugins stamp want
    plugins=$(find plugins examples -mindepth 2 -maxdepth 2 -name setup.cfg -printf '%h\n' 2>/dev/null | sort)
    want=$(cat requirements/tested.txt setup.cfg pyproject.toml $(for p in $plugins; do echo "$p/setup.cfg"; done) | sha256sum | cut -d' ' -f1)
    stamp="$VENV/.ddtoolbox-installed"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        # only a first install needs the room: an update replaces a few packages in place
        if ! compgen -G "$VENV/lib/python*/site-packages/torch" >/dev/null; then check_disk; fi
        if [ ! -x "$VENV/bin/python" ]; then
            echo "dev.sh: creating virtual environment $VENV" >&2
            "$PY" -m venv "$VENV"
        fi
        echo "dev.sh: installing packages (torch, torchvision, kornia, captum, pluggy, numpy, tqdm, matplotlib, pytest, import-linter, tensorboard, wandb, selenium)" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/tested.txt
        local editable=(-e ".[plots]")
        for p in $plugins; do editable+=(-e "$p"); done
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c requirements/tested.txt "${editable[@]}"
        echo "$want" > "$stamp"
    fi
}

APT_UPDATED=""

# apt_install PACKAGE...: install Debian packages (as root, or through sudo); fails where apt is missing
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! command -v sudo >/dev/null; }; then
        return 1
    fi
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

setup_data() {
    if [ -n "${DDTOOL_DATA:-}" ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
        return
    fi
    echo "dev.sh: installing Fashion-MNIST (Debian package dataset-fashion-mnist)" >&2
    if ! apt_install dataset-fashion-mnist; then
        echo "dev.sh: cannot install Fashion-MNIST here; put its four IDX .gz files in a folder and set DDTOOL_DATA to it" >&2
        exit 2
    fi
}

setup_browser() {
    if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
        return
    fi
    echo "dev.sh: installing Chromium and chromedriver (Debian packages chromium, chromium-driver) for the report's browser test" >&2
    if ! apt_install chromium chromium-driver; then
        echo "dev.sh: cannot install Chromium here; the report's browser test will be skipped" >&2
        if [ -n "${CI:-}" ]; then exit 2; fi   # CI must run that test
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup) setup_python; setup_data ;;
    demo)  setup_python; setup_data; exec "$VENV/bin/ddtool" demo "$@" ;;
    test)  setup_python; setup_data; setup_browser; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
