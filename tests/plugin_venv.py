"""A throwaway virtual environment for tests that pip-install plugins.

It sees the site-packages of the environment running the tests (torch and friends, no
re-install; not the base interpreter's, which may lack what the tests installed) but pip
writes into the venv only, so a test never changes the environment other tests and
engineers use.
``subbench`` runs from this checkout through a small launcher on the venv's PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_venv(root: Path) -> dict[str, str]:
    """Create the venv under ``root``; return the environment that puts it first on PATH."""
    venv = Path(root) / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    # `venv --system-site-packages` would expose the *base* interpreter's packages; expose the
    # running environment's instead (its .pth files included, through site.addsitedir).
    inner = subprocess.run([str(bindir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(inner, "_subbench_outer_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in outer) + "\n")
    launcher = bindir / "subbench"
    launcher.write_text(f"#!{bindir / 'python'}\nimport sys\nfrom subbench.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    env = dict(os.environ)
    for var in ("SUBBENCH_LOAD_PLUGINS", "SUBBENCH_DISABLE_PLUGINS", "PYTHONHOME"):
        env.pop(var, None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHON"] = str(bindir / "python")
    return env
