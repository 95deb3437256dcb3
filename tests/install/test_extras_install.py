"""Each extra, installed alone from a freshly built wheel into a fresh venv, runs what it is for.

scripts/check_extras.py does the work (see its docstring and tests/install/smoke/); tests/conftest.py starts
it in the background when this module is collected, so it runs beside the rest of the suite, and moves these
tests to the end of the run, where they wait for it. One test per job: a broken extra fails CI by name.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_extras", ROOT / "scripts" / "check_extras.py")
check_extras = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_extras)

WAIT_S = 3600  # the job on a loaded 2-core machine; it normally ends before the rest of the suite


@pytest.fixture(scope="module")
def results(request):
    # started by tests/conftest.py when this module was collected (by whichever xdist worker came first)
    work = request.config._cellvit_extras_job
    deadline = time.monotonic() + WAIT_S
    while not (work / "rc").is_file() and time.monotonic() < deadline:
        time.sleep(2)
    rc = int((work / "rc").read_text()) if (work / "rc").is_file() else None
    log = (work / "check_extras.log").read_text()
    print(log)
    found = work / "results.json"
    if not found.is_file():
        pytest.fail(f"scripts/check_extras.py exited {rc} without results:\n{log[-4000:]}", pytrace=False)
    data = json.loads(found.read_text())
    yield data
    if rc == 0:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("job", list(check_extras.JOBS))
def test_extra_installs_alone_and_runs_its_commands(job, results):
    r = results["jobs"].get(job)
    assert r is not None, f"job {job} did not run"
    if not r["ok"]:
        tail = "".join(Path(r["log"]).read_text().splitlines(keepends=True)[-60:])
        pytest.fail(
            f"pip install 'cellvit-trt[{r['extras']}]' in a fresh venv: its checks failed\n{tail}",
            pytrace=False,
        )
