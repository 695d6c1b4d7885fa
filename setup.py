"""Build hook: ship the top-level ``tasks/`` and ``leaderboard/schema/`` inside the wheel.

Their home in the source tree stays the top level (lm-eval's ``--include_path tasks/traits``,
the docs and the leaderboard read them there); ``build_py`` copies them into
``subbench/_data/`` of the build so that a plain ``pip install .`` carries them.
``subbench/resources.py`` reads that copy in an installed package and the top level in a
checkout or an editable install. Everything else is declared in setup.cfg.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: source directory -> its place under subbench/_data in the build
SHIPPED = {"tasks": "tasks", "leaderboard/schema": "leaderboard/schema"}
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithData(build_py):
    def run(self):
        if not getattr(self, "editable_mode", False):
            # a build directory left from an earlier build may hold modules since renamed or removed
            shutil.rmtree(Path(self.build_lib) / "subbench", ignore_errors=True)
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the source tree itself
        for src, dst in SHIPPED.items():
            target = Path(self.build_lib) / "subbench" / "_data" / dst
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / src, target, ignore=IGNORE)


setup(cmdclass={"build_py": BuildPyWithData})
