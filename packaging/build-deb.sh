#!/usr/bin/env bash
# Build rollbackd's wheel and sdist (python -m build) and rollbackd_<version>_<arch>.deb, all into packaging/out/.
#
# The .deb carries a ready venv at /opt/rollbackd, built here against the target's own interpreter
# (/usr/bin/python3.X of the Debian release the package is for) and relocated from the staging dir: every
# file is owned by dpkg (dpkg -S, clean removal, no pip or network at install time). The venv holds compiled
# wheels (psutil, pydantic-core, systemd-python), so the package is per architecture and per Python minor
# version, and is built on the release it targets.
#
#   packaging/build-deb.sh            uses .venv/bin/python (for build and pip) if present, else python3
#   BUILD_PYTHON=... TARGET_PYTHON=/usr/bin/python3.11 OUT_DIR=... packaging/build-deb.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${OUT_DIR:-$here/out}
if [ -z "${BUILD_PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then BUILD_PYTHON=$repo/.venv/bin/python; else BUILD_PYTHON=python3; fi
fi
target_python=$(readlink -f "${TARGET_PYTHON:-/usr/bin/python3}")
python_name=$(basename "$target_python")  # python3.11: the Debian package and the venv's interpreter
case "$python_name" in
python3.[0-9]*) ;;
*)
    echo "build-deb: TARGET_PYTHON must be a Debian /usr/bin/python3.X, got $target_python" >&2
    exit 2
    ;;
esac
"$target_python" -c 'import venv' || {
    echo "build-deb: $target_python has no venv module (apt-get install ${python_name}-venv)" >&2
    exit 2
}
"$BUILD_PYTHON" -c 'import shtab' 2>/dev/null || {
    echo "build-deb: $BUILD_PYTHON lacks the 'shtab' package (pip install -e '.[test]'): it writes the completions" >&2
    exit 2
}
"$BUILD_PYTHON" -c 'import build' 2>/dev/null || {
    echo "build-deb: $BUILD_PYTHON lacks the 'build' package (pip install -e '.[test]')" >&2
    exit 2
}

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/src/rollbackd/__init__.py")
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "build-deb: no __version__ in src/rollbackd/__init__.py" >&2; exit 2; }

staging=$(mktemp -d "${TMPDIR:-/tmp}/rollbackd-deb.XXXXXX")
trap 'rm -rf "$staging"' EXIT
root=$staging/root
venv=/opt/rollbackd
mkdir -p "$out" "$root"

echo "build-deb: wheel and sdist"
# python -m build stages the sdist and egg-info inside the tree: two builds of one tree at once (two test workers,
# two terminals) break each other, so they take turns on a lock beside the tree's build output.
exec 9>"$repo/build.lock"
flock 9
"$BUILD_PYTHON" -m build --sdist --wheel --outdir "$out" "$repo" >"$staging/build.log" 2>&1 || {
    cat "$staging/build.log" >&2
    exit 1
}
exec 9>&-  # the rest builds in this run's own staging dir
wheel=$out/rollbackd-$version-py3-none-any.whl

echo "build-deb: venv at $venv with $python_name"
"$target_python" -m venv --without-pip "$root$venv"
# pip from the build environment installs into the staged venv's interpreter (pip >= 22.3: --python);
# no bytecode yet: it is compiled below with the final paths.
# Exactly the locked distributions (packaging/requirements.lock, refreshed by packaging/lock.py), each checked
# against its sha256, then rollbackd's own wheel without dependencies; pip check fails the build when
# pyproject.toml wants something the lock does not have. systemd-python has no wheel on PyPI: --no-binary and
# --no-cache-dir build it here, with the target's own interpreter, instead of reusing a wheel pip cached for
# another Python (one built for a pyenv venv carried RUNPATH /root/.pyenv/... in its .so files).
pip_target() { "$BUILD_PYTHON" -m pip --python "$root$venv/bin/python" "$@"; }
{
    pip_target install --quiet --no-compile --no-warn-script-location --no-cache-dir --require-hashes \
        --no-deps --no-binary systemd-python -r "$here/requirements.lock" &&
        pip_target install --quiet --no-compile --no-warn-script-location --no-cache-dir --no-deps "$wheel" &&
        pip_target check
} >"$staging/pip.log" 2>&1 || {
    cat "$staging/pip.log" >&2
    echo "build-deb: if a dependency changed, refresh the lock: .venv/bin/python packaging/lock.py" >&2
    exit 1
}

# Debug symbols are no use in the package (lintian unstripped-binary-or-object); the container tests import
# every one of these after the strip.
find "$root$venv" -type f -name '*.so' -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} +
search_paths=$(find "$root$venv" -type f -name '*.so' -exec readelf -d {} + | grep -E '\(R(UN)?PATH\)' || true)
if [ -n "$search_paths" ]; then
    echo "build-deb: a bundled library still names a library search path: $search_paths" >&2
    exit 1
fi

# Relocate: scripts' shebangs, activate scripts and pyvenv.cfg name the staging path.
grep -rlIZ -- "$root" "$root$venv" | xargs -0 --no-run-if-empty sed -i "s|$root$venv|$venv|g"
if grep -rlI -- "$root" "$root$venv"; then
    echo "build-deb: the staging path is still named in the files above" >&2
    exit 1
fi
"$root$venv/bin/python" -m compileall -q -j 0 -s "$root" -p / "$root$venv/lib" >/dev/null

mkdir -p "$root/usr/bin"
ln -s "$venv/bin/rollbackd" "$root/usr/bin/rollbackd"
# rollbackd(1) from the CLI's argparse parser, by the packaged code itself (-B: no bytecode beside it).
install -d -m 0755 "$root/usr/share/man/man1"
"$root$venv/bin/python" -B "$here/manpage.py" | gzip -9n >"$root/usr/share/man/man1/rollbackd.1.gz"
chmod 0644 "$root/usr/share/man/man1/rollbackd.1.gz"
# bash and zsh completion from the same parser, by shtab at build time (a build tool: not in the package). The
# parser imports no heavy library (tests/cli/test_import_budget.py), so this tree's source is all it needs.
install -d -m 0755 "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions"
for shell in bash zsh; do
    case $shell in
    bash) target=$root/usr/share/bash-completion/completions/rollbackd ;;
    zsh) target=$root/usr/share/zsh/vendor-completions/_rollbackd ;;
    esac
    PYTHONPATH="$repo/src" "$BUILD_PYTHON" -B -m shtab --shell="$shell" --prog rollbackd \
        rollbackd.cli.build_parser >"$target"
    chmod 0644 "$target"
done
install -D -m 0644 "$repo/systemd/rollbackd.service" "$root/lib/systemd/system/rollbackd.service"
# The unit names no monitored service; the example config's data dir comes in this drop-in, installed by the
# operator (README, "Operations").
install -D -m 0644 "$repo/systemd/examples/vbrpg.conf" "$root/usr/share/doc/rollbackd/examples/vbrpg.conf"
install -D -m 0640 "$repo/config/rollbackd.toml" "$root/etc/rollbackd/rollbackd.toml"
install -D -m 0644 "$here/polkit/50-rollbackd.rules" "$root/usr/share/polkit-1/rules.d/50-rollbackd.rules"
install -D -m 0644 "$repo/README.md" "$root/usr/share/doc/rollbackd/README.md"
install -D -m 0644 "$repo/docs/CONFIG.md" "$root/usr/share/doc/rollbackd/CONFIG.md"
install -D -m 0644 "$here/debian/copyright" "$root/usr/share/doc/rollbackd/copyright"
gzip -9n <"$here/debian/changelog" >"$root/usr/share/doc/rollbackd/changelog.gz"
chmod 0644 "$root/usr/share/doc/rollbackd/changelog.gz"
install -D -m 0644 "$here/debian/lintian-overrides" "$root/usr/share/lintian/overrides/rollbackd"
install -d -m 0755 "$root/usr/share/doc/rollbackd/prometheus"
install -m 0644 "$repo"/config/prometheus/*.yml "$repo"/config/prometheus/*.json \
    "$root/usr/share/doc/rollbackd/prometheus/"

install -d -m 0755 "$root/DEBIAN"
for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$root/DEBIAN/$script"
done
install -m 0644 "$here/debian/conffiles" "$root/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
    -e "s/@PYTHON_PACKAGE@/$python_name/g" "$here/debian/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"

deb=$out/rollbackd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "build-deb: $deb"
