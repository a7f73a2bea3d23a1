import json
import subprocess
import sys


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "xserve", *args], capture_output=True, text=True, env=env)


def test_config_show_prints_effective_json(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[mixer]\nresult_size = 12\n")
    r = run("--config", str(f), "config", "show", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["mixer"]["result_size"] == 12 and data["storage"]["data_dir"] == str(tmp_path)


def test_config_show_never_prints_the_api_key(tmp_path):
    import os

    secret = "s3cr3t-key-from-env"
    r = run("config", "show", env={**os.environ, "XSERVE__SERVING__API_KEY": secret})
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    assert json.loads(r.stdout)["serving"]["api_key"] == "<set, redacted>"
    unset = {k: v for k, v in os.environ.items() if k != "XSERVE__SERVING__API_KEY"}
    assert json.loads(run("config", "show", env=unset).stdout)["serving"]["api_key"] == ""


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[mixer]\nwat = 1\n")
    r = run("--config", str(f), "config", "show")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "wat" in r.stderr and "Traceback" not in r.stderr


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "config" in r.stdout
