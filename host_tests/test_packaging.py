"""A non-editable install carries the templates and board files: siq works outside the source tree."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_templates_and_runs_from_anywhere(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("siq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"siq/" + str(p.relative_to(ROOT)) for p in (ROOT / "firmware_template").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= names, shipped - names
    assert "siq/codegen/fit/insn_costs.json" in names  # siq fit's calibrated kernel costs
    # one installed namespace: nothing but siq/ and its dist-info at the top of the wheel
    assert {n.split("/")[0] for n in names} == {"siq", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import siq.codegen.render as r, siq.codegen.target as t; "
              "print(r.TEMPLATE_ROOT); print(r.template_path('boards/startup.c')); "
              "print(len(r.render('bundle/model.mk.j2', prefix='m', upper='M', version='x', config_hash='y')))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    root, startup, size = result.stdout.split()
    assert root.startswith(str(site)) and Path(startup).is_file() and int(size) > 0
