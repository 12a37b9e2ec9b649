"""result.json: which earlier job a sweep run again may keep."""

from dpn_lab.runs.outcome import code_digest, same_job


def test_only_a_job_of_the_same_overrides_and_code_is_the_same_job():
    overrides = ["recipe=robust_extractor", "seed=0"]
    earlier = {"status": "ok", "overrides": overrides, "code": code_digest(), "metrics": {}}
    assert same_job(earlier, list(overrides))
    assert not same_job({**earlier, "code": "other"}, overrides)  # other code: run again
    assert not same_job(earlier, ["recipe=robust_extractor", "seed=1"])
    assert not same_job(None, overrides) and not same_job(["not", "a", "record"], overrides)
