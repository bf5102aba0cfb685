"""Install hints are worded for how tinygpt was installed: ``pip install -e ".[extra]"``
from a source checkout, ``pip install "tinygpt[extra]"`` from a wheel; every message
that names an install command uses the one helper."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograd import backend, install

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def installed_as(monkeypatch, tmp_path):
    """Pretend the package was imported from a checkout (a folder with setup.cfg and
    tinygpt/) or from site-packages (neither)."""
    def set_(kind):
        root = tmp_path / ("my checkout" if kind == "checkout" else "site-packages")
        (root / "tinygpt").mkdir(parents=True, exist_ok=True)
        if kind == "checkout":
            (root / "setup.cfg").write_text("[metadata]\nname = tinygpt\n")
        monkeypatch.setattr(install, "_package_root", lambda: root)
        return root
    return set_


def test_a_wheel_install_gets_the_package_name_form(installed_as):
    installed_as("wheel")
    assert install.install_hint("hf") == 'pip install "tinygpt[hf]"'
    assert install.install_hint() == 'pip install "tinygpt"'


def test_a_checkout_gets_the_dash_e_form_with_a_dot_inside_it_and_its_path_elsewhere(installed_as, tmp_path,
                                                                                       monkeypatch):
    checkout = installed_as("checkout")
    monkeypatch.chdir(checkout)
    assert install.install_hint("hf") == 'pip install -e ".[hf]"'
    monkeypatch.chdir(tmp_path)
    assert install.install_hint("mpi") == f'pip install -e "{checkout}[mpi]"'


def test_the_engine_copied_into_site_packages_says_the_wheel_form(tmp_path):
    # what a wheel install lays out: the packages in site-packages, no setup.cfg beside them
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "autograd", site / "autograd", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from autograd.install import install_hint; print(install_hint('hf'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(site)), timeout=60)
    assert result.stdout.strip() == 'pip install "tinygpt[hf]"', result.stderr


def test_the_cuda_message_uses_the_helper(installed_as, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)      # import cupy fails, even where CuPy is installed
    installed_as("wheel")
    with pytest.raises(backend.BackendUnavailable, match=r'pip install "tinygpt\[cuda\]" \(CUDA 12\) or '
                                                          r'pip install "tinygpt\[cuda13\]" \(CUDA 13\)'):
        backend.use_backend("cupy")


def test_the_mpi_message_uses_the_helper(installed_as, monkeypatch):
    from tinygpt import TinyGPTError, dist
    installed_as("wheel")
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # "import mpi4py" fails
    with pytest.raises(TinyGPTError, match=r'mpi4py cannot be imported .*pip install "tinygpt\[mpi\]"'):
        dist.init(environ={"PMI_SIZE": "2"})


def test_the_hugging_face_message_uses_the_helper(installed_as, monkeypatch, tmp_path):
    from tinygpt import TinyGPTError
    from tinygpt.hf import from_pretrained
    installed_as("wheel")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)      # as if not installed
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TinyGPTError, match=r'huggingface_hub, which downloads, is not installed \(pip install "tinygpt\[hf\]"\)'):
        from_pretrained("gpt2")


def test_the_command_in_this_checkout_says_dash_e(tmp_path):
    # this test suite runs from an editable install (README's test command) or from the
    # checkout itself: both are the -e form, and from the checkout folder it names "."
    if install.how_installed()[0] == "wheel":
        pytest.skip("tinygpt is installed from a wheel here")
    hidden = tmp_path / "hidden"                 # huggingface_hub as if not installed
    hidden.mkdir()
    (hidden / "huggingface_hub.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path), HOME=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env.pop("HF_HOME", None)
    result = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--pretrained", "gpt2"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert 'pip install -e ".[hf]"' in result.stderr, result.stderr
