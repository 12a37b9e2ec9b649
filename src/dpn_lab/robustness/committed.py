"""Committed results: what a comparison sweep measured, kept under results/<name>/ with the commit, the
command and the machine that made it, and the tables and figures rendered from those files (never typed in).

results/<name>/ holds
  runs.csv.gz       every per-job number in long form (dpn_lab.robustness.long_form): the stored truth, the
                    sweep's runs.csv compressed (digits: 4 MB of text, past the repository's 2 MiB a file;
                    `pandas.read_csv` and `zcat` read it as it is);
  jobs.csv          one row per job: its overrides, status, test accuracy and number of test images (the
                    sentinel test reruns one of them);
  provenance.json   command, commit (and whether the tree had uncommitted changes), date, seconds, the
                    processor, the kernel identity (dpn_lab.runs.cpu_kernels) and the sentinel job;
  comparison_forest.png  drawn from runs.csv by `record` and `render`;
  stage_one.ckpt    a stage-2 sentinel's stage-1 checkpoint (recipe=frozen_denoiser; weights, hyperparameters
                    and data record), which its rerun starts from.
A block between `<!-- results:<name>:<table> -->` and `<!-- end results -->` in README.md or docs/*.md is
replaced by `render_text`: verdicts (the primary endpoints, Holm), per-level tables (Benjamini-Hochberg),
test_steps and provenance, all computed from runs.csv when rendered.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from dpn_lab.checkpoints import copy_stage_one
from dpn_lab.errors import ConfigError
from dpn_lab.robustness.compare import level_markdown, paired_levels
from dpn_lab.robustness.evaluate import write_rows
from dpn_lab.robustness.long_form import finished_jobs, read_runs, runs_frame, write_runs
from dpn_lab.robustness.verdicts import COMPARISONS, verdict_markdown, verdict_table
from dpn_lab.runs.cpu_kernels import kernel_identity, processor
from dpn_lab.viz.plots import forest_plot, save_figure

JOB_COLUMNS = ("job", "overrides", "status", "test_acc", "n_test")
# per-level tables: block name -> (axis, metric, whether the calibration baselines get columns)
LEVEL_TABLES = {
    "accuracy": ("corruption", "accuracy", True),
    "ece": ("corruption", "ece", False),
    "nll": ("corruption", "nll", False),
    "auroc_potential": ("corruption", "auroc_potential", False),
    "auroc_msp": ("corruption", "auroc_msp", False),
    "denoising_ratio": ("corruption", "denoising_ratio", False),
    "adversarial": ("attack", "accuracy", False),
    "ood": ("ood", "auroc", False),
}
# headline: the verdicts of the sentinel's recipe and variant (the default model) only, one row per endpoint
BLOCKS = ("provenance", "headline", "verdicts", "forest", "test_steps", *LEVEL_TABLES)
FOREST, RUNS = "comparison_forest.png", "runs.csv.gz"
STAGE_ONE = "stage_one.ckpt"  # a stage-2 sentinel's stage-1 checkpoint
# gzip without a time stamp: recording the same numbers again writes the same bytes
COMPRESSION = {"method": "gzip", "mtime": 0}
BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+):(?P<table>\w+) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S
)


def _git(*args: str, cwd: Path) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def job_table(sweep_dir: Path) -> list[dict[str, Any]]:
    """jobs.csv's rows: every numbered job directory of the sweep, in job order."""
    rows = []
    for job_dir, result in finished_jobs(sweep_dir):
        meta_path = job_dir / "robustness.json"
        n_test = json.loads(meta_path.read_text())["rows"][0]["n"] if meta_path.is_file() else None
        rows.append(
            {
                "job": int(job_dir.name),
                "overrides": " ".join(result["overrides"]),
                "status": result["status"],
                "test_acc": result["metrics"].get("test/acc"),
                "n_test": n_test,
            }
        )
    return rows


def tree_state(root: Path) -> tuple[str, bool]:
    """(HEAD commit, whether src/ or conf/ have uncommitted changes): what a measurement ran on."""
    return _git("rev-parse", "HEAD", cwd=root), bool(
        _git("status", "--porcelain", "--", "src", "conf", cwd=root)
    )


def record(
    sweep_dir: Path,
    results_dir: Path,
    command: str,
    sentinel: str,
    seconds: float | None,
    tree: tuple[str, bool] | None = None,
) -> Path:
    """Copy a finished comparison sweep into results_dir (see the module docstring) and draw its forest
    plot; returns results_dir. `tree` is the (commit, uncommitted changes) the sweep ran on, taken when it
    started (default: now). Nothing is written when the sweep is incomplete or the sentinel is ambiguous."""
    jobs = job_table(sweep_dir)
    failed = [j["job"] for j in jobs if j["status"] != "ok"]
    if failed:
        raise ConfigError(
            f"{sweep_dir}: jobs {failed} did not finish; a result is recorded from complete sweeps only"
        )
    matches = [j for j in jobs if set(sentinel.split()) <= set(j["overrides"].split())]
    if len(matches) != 1:
        raise ConfigError(
            f"sentinel {sentinel!r} matches {len(matches)} jobs of {sweep_dir}; name exactly one"
        )
    frame = runs_frame(sweep_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stage_one = [o if not o.startswith("variant=") else "variant=stage_one" for o in sentinel.split()]
    if "recipe=frozen_denoiser" in stage_one and stage_one != sentinel.split():
        # a stage-2 sentinel starts from its stage 1: kept beside the numbers, so the rerun trains stage 2 only
        (job,) = [j for j in jobs if set(stage_one) <= set(j["overrides"].split())]
        copy_stage_one(str(sweep_dir / str(job["job"])), results_dir / STAGE_ONE)
    write_runs(frame, results_dir / RUNS, compression=COMPRESSION)
    write_rows(jobs, results_dir / "jobs.csv", JOB_COLUMNS)
    commit, dirty = tree or tree_state(Path(__file__).resolve().parents[3])
    provenance = {
        "command": command,
        "commit": commit,
        "uncommitted_changes": dirty,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "processor": processor(),
        "kernels": kernel_identity(),
        "sweep": str(sweep_dir),
        "sentinel": sentinel,
    }
    (results_dir / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    draw_figures(results_dir)
    return results_dir


@cache
def analysis(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs.csv, its per-level paired differences, its verdict table) of a committed result: the DPN
    against its ablation and its control (verdicts.COMPARISONS). Cached: one render reads each once."""
    frame = read_runs(results_dir / RUNS)
    present = set(frame["variant"])
    comparisons = [(t, r) for t, r in COMPARISONS if {t, r} <= present]
    tables = [(axis, metric) for axis, metric, _ in LEVEL_TABLES.values()]
    return frame, paired_levels(frame, comparisons, tables), verdict_table(frame, comparisons)


def draw_figures(results_dir: Path) -> None:
    """comparison_forest.png of a committed result, from its runs.csv."""
    verdicts = analysis(results_dir)[2]
    save_figure(
        forest_plot(verdicts, f"{results_dir.name}: DPN − reference, paired 95% intervals"),
        results_dir / FOREST,
    )


def steps_table(frame: pd.DataFrame, kind: str = "gaussian") -> str:
    """Rows: (recipe, severity of `kind`); columns: the number of steps T at test; the DPN's mean ± std over
    seeds (the references have no trained potential: their rows would mean nothing)."""
    rows = frame[(frame["axis"] == "test_steps") & (frame["kind"] == kind) & (frame["variant"] == "dpn")]
    rows = rows.assign(steps=rows["metric"].str.removeprefix("accuracy at T=").astype(int))
    table = rows.groupby(["recipe", "level", "steps"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    steps = sorted(table["steps"].unique())
    lines = [f"| recipe (the DPN) | {kind} | " + " | ".join(f"T={t}" for t in steps) + " |"]
    lines.append("|---|---|" + "---|" * len(steps))
    for (recipe, level), cells in table.groupby(["recipe", "level"], sort=False):
        by_steps = cells.set_index("steps")
        lines.append(
            f"| {recipe} | {level} | "
            + " | ".join(f"{by_steps.loc[t, 'mean']:.3f} ± {by_steps.loc[t, 'std']:.3f}" for t in steps)
            + " |"
        )
    return "\n".join(lines) + "\n"


def provenance_line(results_dir: Path) -> str:
    p = json.loads((results_dir / "provenance.json").read_text())
    dirty = " plus uncommitted changes" if p["uncommitted_changes"] else ""
    took = f", {p['seconds'] / 60:.0f} min" if p.get("seconds") else ""
    cpu, kernels = p["processor"], p["kernels"]
    return (
        f"Measured by `{p['command']}` on commit {p['commit'][:7]}{dirty}, {p['date'][:10]}{took}: "
        f"{cpu['model_name']} (family/model/stepping {cpu['family_model_stepping']}, {cpu['cores']} cores), "
        f"torch {kernels['torch']}, {kernels['torch_threads']} threads, kernels {kernels['aten_cpu_capability']} "
        f"(MKL {kernels['mkl']} CBWR={kernels['mkl_cbwr']}, oneDNN {kernels['onednn']} max ISA "
        f"{kernels['onednn_max_cpu_isa']}); files: `results/{results_dir.name}/`.\n"
    )


def render(results_dir: Path, table: str, link_prefix: str = "") -> str:
    """The markdown of one block of a committed result; `link_prefix` leads from the page to results/."""
    if table not in BLOCKS:
        raise ConfigError(f"results block {table!r}: no such table; the tables: {', '.join(BLOCKS)}")
    if table == "provenance":
        return provenance_line(results_dir)
    frame, paired, verdicts = analysis(results_dir)
    if table == "verdicts":
        return verdict_markdown(verdicts)
    if table == "headline":
        sentinel = dict(
            o.split("=", 1)
            for o in json.loads((results_dir / "provenance.json").read_text())["sentinel"].split()
        )
        shown = (verdicts["recipe"] == sentinel.get("recipe", "")) & (
            verdicts["treatment"] == sentinel["variant"]
        )
        return verdict_markdown(verdicts[shown])
    if table == "forest":
        return f"![{results_dir.name}: paired intervals]({link_prefix}results/{results_dir.name}/{FOREST})\n"
    if table == "test_steps":
        return steps_table(frame)
    axis, metric, baselines = LEVEL_TABLES[table]
    return level_markdown(frame, paired, axis, metric, baselines)


def render_text(text: str, results_root: Path, link_prefix: str = "") -> str:
    """`text` with every results block re-rendered from results_root/<name>/."""

    def block(match: re.Match) -> str:
        body = render(results_root / match["name"], match["table"], link_prefix)
        return f"{match.group(1)}{body}{match.group(5)}"

    return BLOCK.sub(block, text)


def sentinel_tolerance(results_dir: Path, identity: dict[str, Any]) -> tuple[float, str]:
    """How far the rerun sentinel's test accuracy may be from the recorded one, and why: one test image where
    this machine's kernel identity (dpn_lab.runs.cpu_kernels) is the recording machine's, so that any change
    of training numerics fails; elsewhere, where the same code may round differently, 2 x the sample std of
    the sentinel's model over the recorded seeds (its test/acc), naming what differs."""
    provenance = json.loads((results_dir / "provenance.json").read_text())
    sentinel = dict(o.split("=", 1) for o in provenance["sentinel"].split())
    jobs = pd.read_csv(results_dir / "jobs.csv")
    (n_test,) = jobs.loc[
        jobs["overrides"].map(lambda o: set(provenance["sentinel"].split()) <= set(o.split())), "n_test"
    ]
    recorded = provenance["kernels"]
    # a key the recording predates (e.g. openblas_coretype) was not recorded, so it cannot be said to differ
    differ = {k: (v, identity.get(k)) for k, v in recorded.items() if v != identity.get(k)}
    if not differ:
        return 1 / n_test + 1e-9, "the recording machine's kernels: one test image"
    frame = read_runs(results_dir / RUNS)
    model = frame[
        (frame["metric"] == "test/acc")
        & (frame["variant"] == sentinel.get("variant"))
        & (frame["recipe"] == sentinel.get("recipe", ""))
    ]
    spread = float(model["value"].std())
    named = ", ".join(f"{k} {a} there, {b} here" for k, (a, b) in sorted(differ.items()))
    return (
        2 * spread + 1e-9,
        f"other kernels ({named}): 2 x the seed std {spread:.4f} of the sentinel's model",
    )
