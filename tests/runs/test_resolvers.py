"""Config resolvers: run directory names, a stage-2 job's stage 1."""

import json


def test_run_names_are_unique_locally_and_stable_under_slurm(monkeypatch):
    from dpn_lab.runs.resolvers import _run_name

    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    names = {_run_name() for _ in range(200)}
    assert len(names) == 200  # same second, still distinct
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert _run_name() == _run_name() == "slurm_4242"  # a requeued job gets its directory back
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _run_name() == "slurm_77_3"


def test_stage_one_job_is_the_finished_stage_one_run_of_the_seed(tmp_path):
    from dpn_lab.runs.resolvers import _stage_one_job

    def job(number: int, status: str, *overrides: str) -> None:
        (tmp_path / str(number)).mkdir()
        result = {"status": status, "overrides": ["recipe=frozen_denoiser", *overrides]}
        (tmp_path / str(number) / "result.json").write_text(json.dumps(result))

    job(0, "ok", "variant=stage_one", "seed=3")
    job(1, "failed", "variant=stage_one", "seed=4")
    job(2, "ok", "variant=tweedie", "seed=4")
    job(3, "ok", "variant=stage_one", "seed=4")
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "result.json").write_text("{not json")
    assert _stage_one_job(str(tmp_path), 3) == str(tmp_path / "0")
    assert _stage_one_job(str(tmp_path), 4) == str(tmp_path / "3")  # the finished one, not the failed one
    assert _stage_one_job(str(tmp_path), 5).endswith("no-finished-stage_one-job-with-seed-5")
    assert _stage_one_job(None, 5) == "no-stage_one_dir:set-model.init_from"
