"""Protocol checks with buf (installed from npm into node_modules/ by `make`).

    python scripts/buf_check.py                    # lint, breaking vs the baseline, baseline current
    python scripts/buf_check.py --update-baseline  # record the protos as the new baseline
    python scripts/buf_check.py --update-baseline --allow-breaking   # a deliberate wire break

`buf breaking` compares the protos with ``proto/baseline.txtpb``, a committed image of the
protos' previous revision (protobuf text format, without comments, so a review diff shows
exactly which names and numbers changed). A committed baseline rather than a git ref:

- it works on any checkout: a shallow clone, a tarball, the commit that introduced it;
- a break can only land with a change to the baseline in the same commit, made by the
  update above with ``--allow-breaking`` (``make proto-baseline BREAKING=yes``): a deliberate,
  reviewable act, not something that slips through because history looked different;
- the check also requires the baseline to match the protos, so every proto change advances
  it (an additive change through the update, which refuses a break). Without that, a field
  added after the baseline was taken could later be deleted or renumbered unnoticed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUF = REPO / "node_modules" / ".bin" / "buf"
BASELINE = Path("proto") / "baseline.txtpb"


def buf(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        raise SystemExit(f"{BUF} is missing: run `make install` (it runs `npm ci`)")
    return subprocess.run([str(BUF), *args], cwd=root, capture_output=True, text=True, check=False)


def build_image(root: Path) -> str:
    """The protos as a text-format image, as the baseline holds them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "image.txtpb"
        result = buf(root, "build", "--exclude-source-info", "-o", str(out))
        if result.returncode != 0:
            raise SystemExit(result.stdout + result.stderr)
        return out.read_text(encoding="utf-8")


def breaking(root: Path) -> subprocess.CompletedProcess[str]:
    return buf(root, "breaking", "--against", str(BASELINE))


def check(root: Path) -> list[str]:
    """Every problem found, each a message naming its fix; empty when all is well."""
    problems: list[str] = []
    lint = buf(root, "lint")
    if lint.returncode != 0:
        problems.append("buf lint (STANDARD):\n" + lint.stdout + lint.stderr)
    if not (root / BASELINE).exists():
        problems.append(f"{BASELINE} is missing: run `make proto-baseline`")
        return problems
    result = breaking(root)
    if result.returncode != 0:
        problems.append(
            f"buf breaking against {BASELINE} (a wire or generated-code break):\n" + result.stdout + result.stderr
            + "If the break is intended: make proto-baseline BREAKING=yes, and say why in the commit."
        )
    elif build_image(root) != (root / BASELINE).read_text(encoding="utf-8"):
        problems.append(f"{BASELINE} does not match the protos: run `make proto-baseline` and commit it")
    return problems


def update_baseline(root: Path, allow_breaking: bool) -> list[str]:
    if (root / BASELINE).exists() and not allow_breaking:
        result = breaking(root)
        if result.returncode != 0:
            return [
                f"not updating {BASELINE}: the protos break it:\n" + result.stdout + result.stderr
                + "If the break is intended: make proto-baseline BREAKING=yes, and say why in the commit."
            ]
    (root / BASELINE).write_text(build_image(root), encoding="utf-8")
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update-baseline", action="store_true", help="record the protos as the new baseline")
    parser.add_argument("--allow-breaking", action="store_true", help="with --update-baseline: even if they break it")
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to check (default: this one)")
    options = parser.parse_args()
    if options.allow_breaking and not options.update_baseline:
        parser.error("--allow-breaking goes with --update-baseline")
    root = options.root.resolve()
    problems = update_baseline(root, options.allow_breaking) if options.update_baseline else check(root)
    for problem in problems:
        print(problem.rstrip(), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
