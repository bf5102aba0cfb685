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


def test_the_tinygpt_command_says_it_in_one_line_without_a_traceback(tmp_path):
    """The command's script imports tinygpt.cli, and so tinygpt, before main() could catch
    anything: the ImportError came out as a traceback. Run as that script would be."""
    fake = tmp_path / "autograd"
    fake.mkdir()
    (fake / "__init__.py").write_text("# HIPS autograd stand-in\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    script = "import sys; sys.argv[0] = '/venv/bin/tinygpt'; from tinygpt.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", script, "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("tinygpt: error: another package named autograd")
    assert "fresh virtual environment" in lines[0]
