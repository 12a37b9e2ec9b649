"""python -m dpn_lab.results record|render|check|compare: committed results, the pages made from them, and the
paired comparison of any sweep.

  compare SWEEP_DIR --by KEY --reference VALUE [--reference VALUE ...] [--treatment VALUE ...]
      pair the jobs of a finished sweep by seed and compare every other value of the override KEY (or the
      --treatment values) with each reference: writes runs.csv, paired.csv, comparison.csv, comparison.md
      (verdicts, per-level tables) and comparison_forest.png into SWEEP_DIR, prints comparison.md
  record NAME SWEEP_DIR --sentinel "recipe=... seed=0" [--command CMD] [--seconds S] [--commit SHA[+dirty]]
      copy a finished comparison sweep into results/NAME/ (runs.csv.gz, jobs.csv, provenance.json with the
      commit the sweep ran on, taken when it started, the command and the machine), then render
  render      rewrite every `<!-- results:NAME:TABLE -->` block of README.md and docs/*.md from results/,
              and redraw each result's comparison_forest.png
  check       exit 1 if a page's blocks differ from what results/ renders
  positive-control [--seeds N] [--noise S]
      the frozen-denoiser comparison's positive control (dpn_lab.robustness.positive_control): prints the
      per-seed accuracies and the paired interval of Tweedie's step over the refit read-out

`make robustness` runs the digits comparison and records it; tests/robustness/test_committed.py holds the
pages to the files and reruns each result's sentinel job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dpn_lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def pages(root: Path) -> list[Path]:
    """The pages that hold results blocks: README.md and docs/*.md."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpn_lab.results", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    comparing = commands.add_parser("compare")
    comparing.add_argument("sweep_dir", type=Path)
    comparing.add_argument("--by", required=True, help="the override that tells the compared models apart")
    comparing.add_argument("--reference", action="append", required=True)
    comparing.add_argument("--treatment", action="append", default=None)
    recording = commands.add_parser("record")
    recording.add_argument("name")
    recording.add_argument("sweep_dir", type=Path)
    recording.add_argument("--sentinel", required=True)
    recording.add_argument("--command", default="make robustness")
    recording.add_argument("--seconds", type=float, default=None)
    recording.add_argument("--commit", default=None, help="the commit the sweep ran on; +dirty: with changes")
    commands.add_parser("render")
    commands.add_parser("check")
    control = commands.add_parser("positive-control")
    control.add_argument("--seeds", type=int, default=5)
    control.add_argument("--noise", type=float, default=1.5, help="the feature noise's scale s")
    args = parser.parse_args(argv)
    if args.action == "positive-control":
        from dpn_lab.robustness.positive_control import positive_control

        per_seed, summary = positive_control(args.seeds, args.noise)
        print(per_seed.to_string(index=False, float_format="%.4f"))
        print(
            f"treatment - reference accuracy: {summary['diff']:+.4f}, 95% interval [{summary['ci_low']:+.4f}, "
            f"{summary['ci_high']:+.4f}], p {summary['p']:.2g}, mdd80 {summary['mdd80']:.4f} ({args.seeds} seeds)"
        )
        return 0
    from dpn_lab.robustness.committed import draw_figures, record, render_text

    try:
        if args.action == "compare":
            from dpn_lab.robustness.compare import compare_sweep

            compare_sweep(args.sweep_dir, args.by, tuple(args.reference), args.treatment)
            print((args.sweep_dir / "comparison.md").read_text())
            return 0
        if args.action == "record":
            tree = (
                (args.commit.removesuffix("+dirty"), args.commit.endswith("+dirty")) if args.commit else None
            )
            record(
                args.sweep_dir, ROOT / "results" / args.name, args.command, args.sentinel, args.seconds, tree
            )
        texts = {page: page.read_text() for page in pages(ROOT)}
        rendered = {
            page: render_text(text, ROOT / "results", "../" if page.parent.name == "docs" else "")
            for page, text in texts.items()
        }
    except (ConfigError, OSError) as error:
        print(f"error: {type(error).__name__}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    if args.action == "check":
        stale = [page.relative_to(ROOT) for page in texts if rendered[page] != texts[page]]
        if stale:
            print(
                f"error: the results blocks of {', '.join(map(str, stale))} differ from results/: run "
                "python -m dpn_lab.results render",
                file=sys.stderr,
            )
            return 1
        return 0
    for page, text in rendered.items():
        page.write_text(text)
    if args.action == "render":
        for result in sorted(p.parent for p in (ROOT / "results").glob("*/runs.csv.gz")):
            draw_figures(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
