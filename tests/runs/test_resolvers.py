"""Config resolvers: run directory names."""


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
