"""Copy a representative subset of the state-test fixtures into tests/conformance/fixtures.

``make test`` runs that subset on every CI run (the fixture tree itself is not part of the
repository). The subset is: every case named in ``--must`` (a file of case ids, one a line:
one per failure class the engine once had), plus, from every folder of the tree, the posts of
its smallest files up to a per-folder budget. Only Cancun and Prague posts are kept, and the
files keep their paths, so case ids (and ioswarm/conformance/known.py) are the same in both.

    python scripts/vendor_conformance.py ../shared/ethereum-tests --must cases.txt \
        --exclude slow-cases.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from ioswarm.conformance.fixtures import FORKS, cases_in, find_fixture_files

OUT = Path(__file__).resolve().parent.parent / "tests" / "conformance" / "fixtures"


def _trim(document: dict[str, Any], keep: set[str], label: str) -> dict[str, Any]:
    """``document`` with only the posts whose case ids are in ``keep``."""
    out: dict[str, Any] = {}
    for name, test in document.items():
        posts: dict[str, list[Any]] = {}
        for fork, entries in test.get("post", {}).items():
            if fork not in FORKS:
                continue
            kept = []
            for post in entries:
                one = {name: {**test, "post": {fork: [post]}}}
                (case,) = cases_in(label, one)
                if case.case_id in keep:
                    # The expected post-state is in ``hash``; the full dump is not needed.
                    kept.append({k: v for k, v in post.items() if k != "state"})
            if kept:
                posts[fork] = kept
        if posts:
            # The signed transaction is in each post (txbytes): the template is not needed.
            slim = {k: v for k, v in test.items() if k != "_info"}
            slim["transaction"] = {}
            out[name] = {**slim, "post": posts}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--must", type=Path, help="case ids to include, one a line")
    parser.add_argument("--per-folder", type=int, default=6, help="cases per folder")
    parser.add_argument("--max-file-kb", type=int, default=60, help="skip larger files")
    parser.add_argument("--exclude", type=Path, help="case ids never to add as extras (slow)")
    args = parser.parse_args()
    must = set(args.must.read_text().split()) if args.must else set()
    exclude = set(args.exclude.read_text().split()) if args.exclude else set()
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in find_fixture_files(args.root):
        by_folder[path.parent].append(path)
    shutil.rmtree(OUT, ignore_errors=True)
    total = 0
    for _, paths in sorted(by_folder.items()):
        budget = args.per_folder
        for path in sorted(paths, key=lambda p: (p.stat().st_size, p.name)):
            label = path.relative_to(args.root).as_posix()
            document = json.loads(path.read_text())
            ids = [c.case_id for c in cases_in(label, document)]
            keep = {i for i in ids if i in must}
            ids = [i for i in ids if i not in exclude]
            small = path.stat().st_size <= args.max_file_kb * 1024
            if budget > 0 and small:
                extra = [i for i in ids if i not in keep][: min(budget, 3)]
                keep.update(extra)
                budget -= len(extra)
            if not keep:
                continue
            target = OUT / label
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(_trim(document, keep, label), separators=(",", ":")))
            total += len(keep)
    print(f"vendored {total} cases into {OUT}")


if __name__ == "__main__":
    main()
