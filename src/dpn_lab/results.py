"""python -m dpn_lab.results record|render|check: committed results and the README tables made from them.

  record NAME SWEEP_DIR --sentinel "recipe=... seed=0" [--command CMD] [--seconds S] [--commit SHA[+dirty]]
      copy a finished comparison sweep into results/NAME/ (comparison.csv, jobs.csv, test_steps.csv,
      provenance.json with the commit the sweep ran on, taken when it started, and the command), then
      render the README
  render      rewrite every `<!-- results:NAME:TABLE -->` block of README.md from results/
  check       exit 1 if README.md's blocks differ from what results/ renders

`make robustness` runs the digits comparison and records it; tests/robustness/test_results.py holds the
README to the files and reruns each result's sentinel job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dpn_lab.errors import ConfigError
from dpn_lab.robustness.results import record, render_readme

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpn_lab.results", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="action", required=True)
    recording = commands.add_parser("record")
    recording.add_argument("name")
    recording.add_argument("sweep_dir", type=Path)
    recording.add_argument("--sentinel", required=True)
    recording.add_argument("--command", default="make robustness")
    recording.add_argument("--seconds", type=float, default=None)
    recording.add_argument("--commit", default=None, help="the commit the sweep ran on; +dirty: with changes")
    commands.add_parser("render")
    commands.add_parser("check")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    try:
        if args.action == "record":
            tree = (
                (args.commit.removesuffix("+dirty"), args.commit.endswith("+dirty")) if args.commit else None
            )
            record(
                args.sweep_dir, ROOT / "results" / args.name, args.command, args.sentinel, args.seconds, tree
            )
        text = readme.read_text()
        rendered = render_readme(text, ROOT / "results")
    except (ConfigError, OSError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if args.action == "check":
        if rendered != text:
            print(
                "error: README.md's results blocks differ from results/: run python -m dpn_lab.results render",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
