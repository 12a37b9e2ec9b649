"""W&B offline: runs read back with wandb's own reader (`wandb leet inspect`), no account, no network."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from conftest import QUICK, run_cli
from dpn_lab.viz.plots import FIGURE_KINDS

pytestmark = pytest.mark.slow
WANDB = (
    str(Path(sys.executable).parent / "wandb")
    if (Path(sys.executable).parent / "wandb").exists()
    else shutil.which("wandb")
)


def inspect(run_dir: Path, summary: bool) -> dict | list[dict]:
    args = [WANDB, "leet", "inspect", "--json", *(["--summary"] if summary else []), str(run_dir)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out) if summary else [json.loads(line) for line in out.splitlines() if line.strip()]


def test_offline_run_holds_metrics_config_and_every_figure(tmp_path):
    result = run_cli(
        "dpn_lab.train",
        "logger=wandb",
        "trainer.max_epochs=2",
        "callbacks.figures.every_n_epochs=1",
        "logger.wandb.tags=[digits,check]",
        "eval.attacks=[pgd_linf]",
        "eval.attack_samples=30",
        "eval.attack_steps=3",
        "eval.ood=[uniform_noise]",
        cwd=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wandb:" not in result.stdout + result.stderr  # no banner, no server lines, no anonymous warning
    (offline,) = (tmp_path / "outputs" / "train" / "runs").glob("*/wandb/offline-run-*")
    summary = inspect(offline, summary=True)
    assert summary["state"] == "finished" and summary["project"] == "dpn_lab"
    assert set(summary["tags"]) == {"digits", "check"}
    values = summary["summary"]
    run_result = json.loads((offline.parents[1] / "result.json").read_text())["metrics"]
    for metric in ("test/acc", "test/loss", "val/acc_best", "train/loss", "init/inertia"):
        assert metric in values
    # the potential's diagnostics, every validation epoch (two epochs, T=5: acc_step_0..5)
    diagnostics = {key for key in values if key.startswith("potential/")}
    assert {"potential/center_spread_ratio", "potential/affine_r2", "potential/acc_step_5"} <= diagnostics
    assert values["robustness/uncertainty_auroc"]["_type"] == "images/separated"
    assert values["robustness/reliability"]["_type"] == "images/separated"
    # the robustness pass after testing: a W&B table and its plot
    assert values["robustness/table"]["_type"] == "table-file"
    assert values["robustness/accuracy_vs_severity"]["_type"] == "images/separated"
    # the attacks after testing: their table and plot, and the strongest variant's accuracy per radius
    assert values["adversarial/table"]["_type"] == "table-file"
    assert values["adversarial/accuracy_vs_eps"]["_type"] == "images/separated"
    # OOD detection after testing: its table and plot
    assert values["ood/table"]["_type"] == "table-file"
    assert values["ood/auroc"]["_type"] == "images/separated"
    assert values["test/acc"] == pytest.approx(run_result["test/acc"])
    # the fully resolved config: interpolations replaced by values
    config = json.dumps(summary["config"])
    assert "n_components" in config and "${" not in config
    # every kind of figure, logged at every epoch, each image present in the run's files and decodable
    records = inspect(offline, summary=False)
    logged = {}
    for record in records:
        item = record.get("history", {}).get("item", {})
        for kind in FIGURE_KINDS:
            for filename in item.get(f"figures/{kind}.filenames", []):
                logged.setdefault(kind, []).append((item[f"figures/{kind}.captions"][0], filename))
    assert set(logged) == set(FIGURE_KINDS)
    for kind, entries in logged.items():
        assert {caption for caption, _ in entries} >= {"epoch 0", "epoch 1"}, kind
        for _, filename in entries:
            assert matplotlib.image.imread(offline / "files" / filename)[..., :3].std() > 0.05


def test_multirun_groups_runs_by_sweep_and_finishes_each(tmp_path):
    result = run_cli(
        "dpn_lab.train",
        "-m",
        "logger=wandb",
        "model.n_steps=0,2",
        "trainer.max_epochs=1",
        *QUICK,
        cwd=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    names = set()
    for run in runs:
        assert inspect(run, summary=True)["state"] == "finished"
        (record,) = [r["run"] for r in inspect(run, summary=False) if r.get("type") == "run"]
        assert record["run_group"] == sweep.name
        names.add(record["display_name"])
    # Hydra's override_dirname: every override of the job, sorted
    assert names == {
        "logger=wandb,model.n_steps=0,robustness@eval=none,trainer.max_epochs=1,~callbacks.figures=null",
        "logger=wandb,model.n_steps=2,robustness@eval=none,trainer.max_epochs=1,~callbacks.figures=null",
    }
