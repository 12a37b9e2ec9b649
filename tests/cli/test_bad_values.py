"""Property test: any bad value for any validated key gives one line, exit status 1, and no traceback."""

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpn_lab import train
from dpn_lab.config import DATA_RULES, MODEL_RULES, TOP_RULES, TRAINER_RULES, Choice

pytestmark = pytest.mark.slow  # each test takes more than ~2 s

RULES = {**TOP_RULES, **MODEL_RULES, **DATA_RULES, **TRAINER_RULES}
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


def bad_values(rule) -> st.SearchStrategy[str]:
    """Override values (as typed on a command line) that the rule must reject."""
    if isinstance(rule, Choice):
        allowed = {str(a).lower() for a in rule.allowed}
        return st.one_of(WORDS, st.integers(-5, 5).map(str)).filter(lambda v: v.lower() not in allowed)
    options = [
        WORDS.filter(lambda v: v not in ("null", "true", "false", "nan", "inf")),
        st.just("nan"),
        st.just("inf"),
    ]
    if rule.low is not None:
        below = st.floats(rule.low - 1000, rule.low, exclude_max=not rule.low_open)
        options.append(below.map(lambda v: str(int(v)) if rule.integer and v == int(v) else repr(v)))
    if rule.high is not None:
        options.append(st.floats(rule.high, rule.high + 1000, exclude_min=not rule.high_open).map(repr))
    if rule.integer:
        options.append(st.floats(0.1, 100).filter(lambda v: v != int(v)).map(repr))
    return st.one_of(options)


def overrides():
    return st.sampled_from(sorted(RULES)).flatmap(lambda key: bad_values(RULES[key]).map(lambda v: (key, v)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=overrides())
def test_every_bad_value_is_one_line_exit_1_no_traceback(case, tmp_path, monkeypatch, capsys):
    key, value = case
    monkeypatch.setenv("DPN_LAB_ROOT", str(tmp_path))
    # fast_dev_run: a bad value that slipped through fails the test in seconds, not after a whole fit
    monkeypatch.setattr(
        sys, "argv", ["dpn_lab.train", f"{key}={value}", "logger=none", "+trainer.fast_dev_run=true"]
    )
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ConfigError: "), err
    assert key in lines[0] and "Traceback" not in err
