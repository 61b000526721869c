"""An offline evaluation started through the API runs on a real worker and equals a direct
`evaluate_bundle` run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import Role
from service.dev.system import LocalSystem, wait_for
from tests.helpers.service import bearer, build_tiny_bundle

RUN = {"split": "test", "batch_size": 4, "resamples": 50, "seed": 7}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random-weight bundle and a synthetic MIMIC-CXR tree with a few test-split studies."""
    from radiology.synth import write_dataset

    root = tmp_path_factory.mktemp("evaluation-inputs")
    data = write_dataset(root / "data", 24, seed=3, workers=1, size=(64, 64), progress=False)
    return build_tiny_bundle(root), data


@pytest.mark.slow
def test_an_evaluation_through_the_api_equals_a_direct_run_on_the_same_split(inputs, tmp_path):
    from evaluation.run import evaluate_bundle

    bundle, data = inputs
    env = {"RECONCILE_INTERVAL_S": "0", "EVALUATION_ROOTS": str(bundle.parent)}
    with LocalSystem(tmp_path / "system", redis_url="", env=env) as system:
        system.start(api=True, workers=["evaluate"])
        with session_scope(system.database_url) as session:
            token = create_api_key(session, name="eval-admin", role=Role.admin)
        with httpx.Client(base_url=system.api_url, headers=bearer(token), timeout=30) as client:
            started = client.post("/v1/evaluations",
                                  json={"bundle_dir": str(bundle), "data_dir": str(data), **RUN})
            assert started.status_code == 202, started.text
            url = started.json()["status_url"]
            direct = evaluate_bundle(bundle, data, RUN["split"], tmp_path / "direct",
                                     RUN["batch_size"], resamples=RUN["resamples"],
                                     seed=RUN["seed"], progress=False)
            wait_for(lambda: client.get(url).json()["state"] in ("succeeded", "failed"), 300,
                     interval=0.5, what="the evaluation to finish")
            run = client.get(url).json()
            assert run["state"] == "succeeded", f"{run['error']}\n{system.logs_text()[-3000:]}"
            assert run["results"]["metrics"] == direct["metrics"]
            assert run["results"]["per_finding_f1"] == direct["per_finding_f1"]
            assert run["results"]["source"] == direct["source"]
            assert run["done"] == run["total"] == direct["reports"] > 0 and run["progress"] == 1.0
            page = client.get(run["report_url"])
            assert page.status_code == 200 and "<html" in page.text.lower()
            listed = client.get("/v1/evaluations").json()
            assert [item["id"] for item in listed["items"]] == [run["id"]]


def test_an_evaluation_of_a_folder_that_is_not_a_bundle_is_refused(tmp_path):
    from service.core.db import migrate
    from tests.helpers.review import api
    from tests.helpers.service import api_settings

    url = f"sqlite:///{tmp_path / 'radreport.db'}"
    migrate(url)
    settings = api_settings(url, tmp_path)
    with session_scope(url) as session:
        token = create_api_key(session, name="eval-admin", role=Role.admin)
    inside = settings.storage_dir / "not-a-bundle"
    inside.mkdir(parents=True)
    with api(settings) as client:
        response = client.post("/v1/evaluations", headers=bearer(token),
                               json={"bundle_dir": str(inside), "data_dir": str(inside)})
        outside = client.post("/v1/evaluations", headers=bearer(token),
                              json={"bundle_dir": str(tmp_path), "data_dir": str(tmp_path)})
    assert response.status_code == 422 and "not a model bundle" in response.json()["detail"]
    assert outside.status_code == 422 and "EVALUATION_ROOTS" in outside.json()["detail"]


def test_the_progress_of_the_generation_bar_is_written_to_the_run(tmp_path):
    from tqdm import tqdm

    from service.core.db import migrate
    from service.core.models import Evaluation, EvaluationState, User
    from service.worker.evaluate import ProgressWatcher

    url = f"sqlite:///{tmp_path / 'radreport.db'}"
    migrate(url)
    with session_scope(url) as session:
        user = User(name="eval-admin", role=Role.admin)
        session.add(user)
        session.flush()
        run = Evaluation(state=EvaluationState.running, bundle_dir="b", data_dir="d", split="test",
                         options={}, created_by=user.id)
        session.add(run)
        session.flush()
        run_id = run.id
    from tests.helpers.service import api_settings

    watcher = ProgressWatcher(api_settings(url, tmp_path), run_id)
    seen = []
    with (
        (tmp_path / "bar.txt").open("w") as sink,
        tqdm(total=5, desc="generating reports", file=sink) as bar,
    ):
        for _ in range(2):
            bar.update(1)
            watcher.poll()
            with session_scope(url) as session:
                row = session.get(Evaluation, run_id)
                seen.append((row.phase, row.done, row.total))
    watcher.poll()
    with session_scope(url) as session:
        row = session.get(Evaluation, run_id)
        seen.append((row.phase, row.done, row.total))
    assert seen == [("generating", 1, 5), ("generating", 2, 5), ("scoring", 5, 5)]
