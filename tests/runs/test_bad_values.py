"""Property test: any bad value for any validated key of any group (model, data, trainer, callbacks, eval, the
top level, analyze's options, the Optuna sweeper) is refused in one line that names the key, on the command
line (before the config is composed) and in a composed config (a value set some other way)."""

import copy
from functools import cache

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from dpn_lab.config import (
    ANALYZE_RULES,
    CALLBACK_RULES,
    DATA_RULES,
    EVAL_RULES,
    MODEL_RULES,
    SWEEPER_RULES,
    TOP_RULES,
    TRAINER_RULES,
    Choice,
    validate_config,
)
from dpn_lab.errors import ConfigError
from dpn_lab.runs.preflight import check_command_line, compose_config

pytestmark = pytest.mark.slow  # 60 examples, one composed config per command

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
# key -> (command, the arguments that make the key exist)
GROUPS = {
    **{
        key: ("train", [])
        for key in {**TOP_RULES, **MODEL_RULES, **DATA_RULES, **TRAINER_RULES, **EVAL_RULES}
    },
    **{key: ("train", []) for key in CALLBACK_RULES if not key.startswith("callbacks.early_stopping")},
    **{key: ("analyze", ["ckpt_path=CKPT"]) for key in ANALYZE_RULES},
    **{key: ("train", ["hparams_search=optuna"]) for key in SWEEPER_RULES},
}
RULES = {
    **TOP_RULES,
    **EVAL_RULES,
    **MODEL_RULES,
    **DATA_RULES,
    **TRAINER_RULES,
    **CALLBACK_RULES,
    **ANALYZE_RULES,
    **SWEEPER_RULES,
}
# keys absent from the default config: a bad value is added with +
ADDED = {"model.extractor_kwargs.norm", "model.extractor_kwargs.pool"}


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


def cases():
    return st.sampled_from(sorted(GROUPS)).flatmap(lambda key: bad_values(RULES[key]).map(lambda v: (key, v)))


def test_every_validated_key_is_exercised():
    assert set(GROUPS) | {k for k in CALLBACK_RULES if k.startswith("callbacks.early_stopping")} == set(RULES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_every_bad_value_is_one_line_naming_its_key(case, tmp_path, monkeypatch):
    key, value = case
    monkeypatch.setenv("DPN_LAB_ROOT", str(tmp_path))
    command, extra = GROUPS[key]
    ckpt = tmp_path / "some.ckpt"
    ckpt.write_bytes(b"read later")
    extra = [e.replace("CKPT", str(ckpt)) for e in extra]
    override = f"{'+' if key in ADDED else ''}{key}={value}"
    with pytest.raises(ConfigError) as caught:
        check_command_line(command, "help", [*extra, override])
    message = str(caught.value)
    assert "\n" not in message and key in message, (override, message)

    cfg = copy.deepcopy(composed(command, tuple(extra)))
    try:
        OmegaConf.update(cfg, key, OverridesParser.create().parse_override(override).value(), force_add=True)
    except ValidationError:
        return  # a typed field of the schema (model.*) cannot hold a value of the wrong type at all
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg, command)
    assert str(caught.value) == message  # the same rule, word for word


@cache
def composed(command: str, extra: tuple[str, ...]) -> DictConfig:
    return compose_config(command, list(extra), [])
