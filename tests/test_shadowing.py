"""tinygpt notices another package named autograd shadowing its engine."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_foreign_autograd_package_gets_a_one_line_explanation(tmp_path):
    fake = tmp_path / "autograd"
    fake.mkdir()
    (fake / "__init__.py").write_text("# HIPS autograd stand-in\n")
    # the fake package comes first on the path; tinygpt itself is found from ROOT
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    result = subprocess.run([sys.executable, "-c", "import tinygpt"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "another package named autograd" in result.stderr and "fresh virtual environment" in result.stderr
