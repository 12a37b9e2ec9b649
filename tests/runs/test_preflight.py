"""The command-line check that runs before torch loads: every mistake is one ConfigError naming the key and
what is allowed; legal command lines pass; --help is each command's own; nothing imports torch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dpn_lab.runs.preflight as preflight_module
from dpn_lab.errors import ConfigError
from dpn_lab.runs.lock import hold_run_directory
from dpn_lab.runs.preflight import check_command_line, preflight

HELP = "python -m dpn_lab.x: test help"


@pytest.fixture(autouse=True)
def outputs_in(tmp_path, monkeypatch):
    monkeypatch.setenv("DPN_LAB_ROOT", str(tmp_path))
    return tmp_path


def refused(args: list[str], command: str = "train") -> str:
    with pytest.raises(ConfigError) as caught:
        check_command_line(command, HELP, args)
    message = str(caught.value)
    assert "\n" not in message
    return message


BAD = [
    # override syntax
    (["model.n_components=4,16"], "model.n_components=4,16 is a sweep (several values): add -m"),
    (["model.n_components=choice(4,16)"], "is a sweep (several values): add -m"),
    (["logger=null"], "logger=null: null is not an option of logger/; choose one of: csv, none, wandb"),
    # every value of a sweep meets its key's rule before the first job starts
    (["-m", "model.n_components=4,-3"], "model.n_components=-3 is out of range: must be an integer >= 1"),
    (["-m", "model.n_steps=range(-2,3)"], "model.n_steps=-2 is out of range: must be an integer >= 0"),
    (["-m", "model.covariance=diag,dense"], "model.covariance='dense' is not allowed; choose one of: full,"),
    (["-m", "data=digits,_base"], "data=digits,_base: _base is a building block of data/, not an option"),
    (["~model"], "~model: only a callback, a logger or an optimizer/scheduler argument can be removed"),
    (
        ["~model.n_components"],
        "~model.n_components: only a callback, a logger or an optimizer/scheduler argument can be removed",
    ),
    (["++model.bogus=1"], "model.bogus is not a model option; the options are: feature_dim, n_components,"),
    (["+model.bogus=1"], "model.bogus is not a model option"),
    (["--bogus"], "unrecognized argument: --bogus; the flags are: --cfg,"),
    (["-cn", "nope"], "--config-name=nope is not a config; the commands' configs are: analyze, eval, train"),
    (["--config-dir", "/does/not/exist"], "--config-dir=/does/not/exist is not a directory"),
    (["data=_base"], "data=_base: _base is a building block of data/, not an option"),
    (["model.n_compnents=3"], "Could not override 'model.n_compnents'"),
    (["data=imagenet"], "Could not find 'data/imagenet'; available options in 'data': blobs,"),
    # trainer
    (
        ["trainer.accelerator=tpu"],
        "trainer.accelerator='tpu' is not allowed; choose one of: auto, cpu, gpu, cuda",
    ),
    (["trainer.accelerator=mps"], "trainer.accelerator='mps' is not allowed"),
    (
        ["trainer.devices=[]"],
        "trainer.devices=[] is not allowed: use a count >= 1, a list of GPU ids, or auto",
    ),
    (
        ["trainer.strategy=banana"],
        "trainer.strategy='banana' is not allowed; choose one of: auto, ddp, ddp_spawn",
    ),
    (["trainer.precision=bf16-true"], "trainer.precision='bf16-true' is not allowed; choose one of: 32-true"),
    (["trainer.precision=16-mixed"], "trainer.precision=16-mixed needs trainer.accelerator=gpu"),
    (
        ["trainer.check_val_every_n_epoch=0"],
        "trainer.check_val_every_n_epoch=0 is out of range: must be an integer >= 1",
    ),
    (
        ["trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val=-1 is out of range: must be a number >= 0 or null",
    ),
    (["trainer.log_every_n_steps=-1"], "trainer.log_every_n_steps=-1 is out of range"),
    (["trainer.num_nodes=2"], "trainer.num_nodes=2 needs a cluster that starts every node's processes"),
    (["model.scheduler.T_max=0"], "model.scheduler.T_max=0 is out of range: must be an integer >= 1"),
    (
        ["model.optimizer._target_=os.system"],
        "model.optimizer._target_='os.system' is not allowed: name a class under torch.optim.",
    ),
    # callbacks
    (
        ["callbacks.figures.n_samples=0"],
        "callbacks.figures.n_samples=0 is out of range: must be an integer >= 2",
    ),
    (["callbacks.figures.every_n_epochs=-1"], "callbacks.figures.every_n_epochs=-1 is out of range"),
    (
        ["callbacks.model_checkpoint.monitor=bogus"],
        "callbacks.model_checkpoint.monitor='bogus' is not allowed; choose one of: val/acc",
    ),
    (["callbacks.kmeans_init.after_epochs=-1"], "callbacks.kmeans_init.after_epochs=-1 is out of range"),
    # model and data
    (
        ["+model.extractor_kwargs.channels=[]"],
        "model.extractor_kwargs.channels=[] is not allowed: use a non-empty list",
    ),
    (
        ["model.extractor=mlp", "+model.extractor_kwargs.hidden=[]"],
        "model.extractor_kwargs.hidden=[] is not allowed",
    ),
    (["model.n_components=100000", "model.feature_dim=100000", "model.init_samples=100000"], "needs about"),
    (
        ["eval.levels.blur=[1000]", "robustness@eval=default"],
        "eval.levels.blur.0=1000 is out of range: must be a number >= 0 and <= 10",
    ),
    # outputs
    (["hydra.run.dir=/proc/dpn_lab_run"], "hydra.run.dir=/proc/dpn_lab_run is not writable"),
    (["hydra.run.dir="], "hydra.run.dir='' is not allowed: give a directory"),
    (["hydra.run.dir=" + "x" * 300], "is too long: each name at most 255 bytes"),
    (["paths.checkpoint_dir=/proc/dpn_lab_ckpt"], "paths.checkpoint_dir=/proc/dpn_lab_ckpt is not writable"),
    (["-m", "hydra.sweep.dir=/proc/dpn_lab_sweep"], "hydra.sweep.dir=/proc/dpn_lab_sweep is not writable"),
    # adversarial evaluation (eval.attacks)
    (
        ["eval.attacks=[pgd_linf,fgsm]"],
        "eval.attacks.1='fgsm' is not allowed; choose one of: pgd_linf, pgd_l2, square_linf, autoattack",
    ),
    (
        ["eval.attacks=[pgd_linf]", "eval.attack_eps.pgd_linf=[-0.1]"],
        "eval.attack_eps.pgd_linf.0=-0.1 is out of range",
    ),
    (
        ["eval.attacks=[square_linf]", "eval.attack_eps.square_linf=[1.5]"],
        "eval.attack_eps.square_linf.0=1.5 is out of range: must be a number >= 0 and <= 1",
    ),
    (
        ["eval.attacks=[pgd_l2]", "eval.attack_steps=0"],
        "eval.attack_steps=0 is out of range: must be an integer >= 1",
    ),
    (
        ["eval.attacks=[pgd_l2]", "eval.attack_gradient=[exact]"],
        "eval.attack_gradient.0='exact' is not allowed",
    ),
    (["eval.attacks=[pgd_l2]", "eval.attack_samples=0"], "eval.attack_samples=0 is out of range"),
    (["eval.attacks=pgd_linf"], "eval.attacks='pgd_linf' is not allowed: use a list of pgd_linf"),
    (
        ["+model.noise_pairs={kind: pgd_linf, severity: 1.5}"],
        "model.noise_pairs.severity=1.5 is out of range: must be a number > 0 and <= 1",
    ),
    (
        ["+model.noise_pairs={kind: pgd_l2, severity: 0.5, steps: 0}"],
        "model.noise_pairs.steps=0 is out of range",
    ),
    (
        ["+model.noise_pairs={kind: fgsm, severity: 0.1}"],
        "model.noise_pairs.kind='fgsm' is not allowed; choose one of: gaussian",
    ),
    (
        ["model.refinement=mlp"],
        "model.refinement='mlp' is not allowed; choose one of: potential, residual_mlp",
    ),
    (
        ["variant=deep"],
        "Could not find 'variant/deep'; available options in 'variant': ablation, control, denoise, denoiser_control, density, dpn, refit_ablation, stage_one, tweedie",
    ),
    # OOD detection (eval.ood) and the classes it holds out
    (
        ["eval.ood=[uniform_noise,svhn]"],
        "eval.ood.1='svhn' is not allowed; choose one of: uniform_noise, permuted, other_digits, held_out_classes",
    ),
    (
        ["eval.ood=[held_out_classes]"],
        "eval.ood=held_out_classes is not possible with data=digits: it needs data.classes, the labels to train on",
    ),
    (
        ["eval.ood=[held_out_classes]", "data.classes=[0,1,2,3,4,5,6,7,8,9]"],
        "eval.ood=held_out_classes is not possible with data=digits: it needs data.classes to leave a label out",
    ),
    (
        ["data=cifar10", "eval.ood=[other_digits]"],
        "eval.ood=other_digits is not possible with data=cifar10: it resamples a one-channel digit set to the "
        "input's height and width: data=cifar10 has 3 channels",
    ),
    (
        ["data=blobs", "model.extractor=mlp", "eval.ood=[uniform_noise]"],
        "eval.ood=uniform_noise is not possible with data=blobs",
    ),
    (
        ["data.classes=[0,12]"],
        "data.classes=[0, 12] is not allowed: use null or a list of two or more distinct labels of 0..9",
    ),
    (["data.classes=[3,3]"], "data.classes=[3, 3] is not allowed"),
    (["data.classes=[3]"], "data.classes=[3] is not allowed"),
    (["data=blobs", "model.extractor=mlp", "data.n_classes=3", "data.classes=[0,3]"], "labels of 0..2"),
    (
        ["robustness@eval=mnist_c", "eval.levels.rotate=[0,270]"],
        "eval.levels.rotate.1=270 is out of range: must be a number >= 0 and <= 180",
    ),
    # extractors and augmentation the data cannot take
    (
        ["data=blobs", "model.extractor=resnet18", "model.n_components=4"],
        "model.extractor=resnet18 is not possible with data=blobs: its inputs are flat vectors, not images; use "
        "model.extractor=mlp",
    ),
    (["data=blobs", "model.n_components=4"], "model.extractor=cnn is not possible with data=blobs"),
    (
        ["data=blobs", "model.extractor=mlp", "model.n_components=4", "data.augment=crop_flip"],
        "data.augment=crop_flip is not possible with data=blobs: its inputs are no images; use none",
    ),
    (["data.augment=mirror"], "data.augment='mirror' is not allowed; choose one of: none, crop, crop_flip"),
    (["data.augment_padding=-2"], "data.augment_padding=-2 is out of range: must be an integer >= 0"),
    (
        ["+model.extractor_kwargs.channels=[8]", "model.extractor=resnet18"],
        "model.extractor_kwargs.channels is not allowed for model.extractor=resnet18; it takes: norm",
    ),
    # what Hydra or OmegaConf raise while composing or resolving (each printed a traceback once)
    (["=5"], "=5: an override needs a key, e.g. model.n_components=5"),
    (
        ["data=5"],
        "data=5: 5 is not an option of data/; choose one of: blobs, cifar10, cifar10_synthetic, digits",
    ),
    (["model=[1,2]"], "model=[1,2]: 1 is not an option of model/; choose one of: dpn"),
    (
        ["model.n_components=${model.nonexistent}"],
        "model.n_components: Interpolation key 'model.nonexistent' not found",
    ),
    (
        ["model.n_components=${oc.env:DPN_NOPE_VAR}"],
        "model.n_components: KeyError raised while resolving interpolation: \"Environment variable 'DPN_NOPE_VAR' not found\"",
    ),
    # launchers and sweepers
    (
        ["hparams_search=optuna", "hydra.sweeper.n_trials=-1"],
        "hydra.sweeper.n_trials=-1 is out of range: must be an integer >= 1",
    ),
]


@pytest.mark.parametrize("args, expected", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_mistake_is_one_line_naming_the_key_and_what_is_allowed(args, expected):
    assert expected in refused(args)


def test_a_run_directory_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    assert f"{tmp_path / 'file'} is a file, not a directory" in refused(
        [f"hydra.run.dir={tmp_path}/file/run"]
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    assert "is not writable: Permission denied" in refused([f"hydra.run.dir={locked}/run"])


def test_the_slurm_launcher_without_slurm_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH" in refused(
        ["-m", "hydra/launcher=submitit_slurm"]
    )


def test_several_nodes_are_allowed_inside_a_cluster(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "8")
    check_command_line("train", HELP, ["trainer.num_nodes=2"])


def test_a_run_directory_held_by_another_process_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with hold_run_directory(run_dir):
        message = refused([f"hydra.run.dir={run_dir}"])
    assert f"hydra.run.dir={run_dir} is in use by process {os.getpid()}: wait for it to end" in message
    check_command_line("train", HELP, [f"hydra.run.dir={run_dir}"])  # free again


def test_a_second_holder_in_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('process 4242\\n'); f.flush(); print('held', flush=True); time.sleep(30)",
            str(tmp_path / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=r"ckpt_path=.* is in use by process 4242"):
            with hold_run_directory(tmp_path, "ckpt_path"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_run_directory(tmp_path, "ckpt_path"):  # the kernel dropped the dead holder's lock
        assert (tmp_path / ".lock").read_text() == f"process {os.getpid()}\n"


@pytest.mark.parametrize(
    "command, args",
    [
        ("train", []),
        ("train", ["~callbacks.figures", "~logger.csv"]),
        ("train", ["-m", "model.n_components=4,16", "seed=range(0,3)"]),
        ("train", ["trainer.precision=64-true", "trainer.precision=bf16-mixed"]),
        ("train", ["hparams_search=optuna"]),
        ("train", ["+trainer.fast_dev_run=true", "recipe=classic"]),
    ],
)
def test_legal_command_lines_pass(command, args):
    check_command_line(command, HELP, args)


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_eval_and_analyze_say_that_ckpt_path_is_required_and_how_to_find_one(command):
    message = refused([], command)
    assert message.startswith("ckpt_path is required: ckpt_path=outputs/train/runs/<run>/checkpoints/")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["n_samples=0"], "n_samples=0 is out of range: must be an integer >= 2"),
        (["n_samples=-5"], "n_samples=-5 is out of range"),
        (["n_samples=abc"], "n_samples='abc' has the wrong type: must be an integer >= 2"),
        (["n_paths=-1"], "n_paths=-1 is out of range: must be an integer >= 0"),
    ],
)
def test_analyze_options_are_checked(tmp_path, args, expected):
    ckpt = tmp_path / "some.ckpt"
    ckpt.write_bytes(b"checked later, when read")
    assert expected in refused([f"ckpt_path={ckpt}", *args], "analyze")


@pytest.mark.parametrize("module", ["dpn_lab.train", "dpn_lab.eval", "dpn_lab.analyze"])
def test_each_command_has_its_own_help_printed_before_torch_loads(module, tmp_path):
    probe = (
        "import runpy, sys; sys.argv = ['x', '--help']\n"
        f"try:\n    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"python -m {module}") and "Example" in text and "data=" in text
    assert "_base" not in text


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("model.n_steps=-1", "error: ConfigError: model.n_steps=-1 is out of range: must be an integer >= 0"),
        # the last check of all: every other group was validated without torch too
        (
            "hydra.run.dir=/proc/dpn_lab_run",
            "error: ConfigError: hydra.run.dir=/proc/dpn_lab_run is not writable",
        ),
    ],
)
def test_a_mistake_is_reported_before_torch_loads(tmp_path, bad, expected):
    probe = (
        f"import runpy, sys; sys.argv = ['x', '{bad}']\n"
        "try:\n    runpy.run_module('dpn_lab.train', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 1, e.code\n"
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "DPN_LAB_ROOT": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().startswith(expected)
    assert not Path(tmp_path / "outputs").exists()  # nothing was written for a refused command line


def run_preflight(args: list[str], capsys) -> tuple[int, list[str]]:
    """preflight() as a command calls it: (exit status, or 0 if it returned; lines on stderr)."""
    try:
        preflight("train", HELP, args)
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "args",
    [["=5"], ["model.n_components=${model.nonexistent}"], ["model.n_components=${oc.env:DPN_NOPE_VAR}"]],
)
def test_what_the_check_itself_raises_is_one_error_line(args, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, lines = run_preflight(args, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ConfigError: "), lines


def test_a_bug_inside_the_check_is_one_line_that_says_so(capsys, monkeypatch):
    import dpn_lab.runs.preflight as module

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(module, "check_outputs", lambda cfg, multirun: 1 / 0)
    code, lines = run_preflight(["seed=3"], capsys)
    assert code == 1 and lines == [
        "error: ZeroDivisionError: division by zero (an unexpected error while checking the command line; "
        "HYDRA_FULL_ERROR=1 shows its traceback)"
    ]


# override-shaped text: keys, sigils and values drawn from what a command line can hold
OVERRIDE_TEXT = st.text(alphabet=st.sampled_from("abcdmnpstz._=+~@$%{}[](),:'\" -0123456789"), max_size=24)
KEYS = st.sampled_from(
    ["", "model.n_components", "data", "model", "+model.x", "seed", "trainer.devices", "~eval"]
)


@pytest.mark.slow  # ~0.2 s per example
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    args=st.lists(
        st.one_of(OVERRIDE_TEXT, st.builds(lambda k, v: f"{k}={v}", KEYS, OVERRIDE_TEXT)),
        min_size=1,
        max_size=2,
    )
)
def test_any_override_string_passes_or_is_one_error_line(args, capsys, monkeypatch):
    """Property: whatever is typed, the check returns (a legal command line) or exits 1 with exactly one
    `error: ConfigError:` line: never a traceback, never a bug's line."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    preflight_module._checked.clear()
    code, lines = run_preflight(args, capsys)
    if code == 0:
        assert lines == []
    else:
        assert code == 1 and len(lines) == 1, (args, lines)
        assert lines[0].startswith("error: ConfigError: "), (args, lines)
