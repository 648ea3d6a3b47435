"""`make mutate`: mutation testing of the modules that decide correctness, with cosmic-ray.

Why a runner: the package maps top-level folders into `chromaflow.*` (pyproject's
package-dir), so tools that copy sources elsewhere and import them by path (mutmut 3's
`mutants/` tree) import the unmutated editable install instead. cosmic-ray mutates the file
in place and runs a test command, which works with any layout; this runner gives it a copy:

1. `git archive HEAD` into WORK/src (the committed code; the worktree is never touched),
   with links WORK/src/chromaflow/{models,flows,...} -> WORK/src/<folder>, the mapping
   pyproject makes; the tests run in WORK/src with PYTHONPATH=WORK/src, which Python's path
   finder serves before the editable install's finder;
2. per group of groups.toml: a cosmic-ray config, `init`, the operator filter (one natural
   mutation per site, as mutmut makes: `<` -> `<=`, `+` -> `-`, numbers +-1, `and` -> `or`,
   True <-> False, dropped `not`/unary minus, loops run zero times; not cosmic-ray's
   all-to-all operator swaps), the line filter when a group names functions,
   `# pragma: no mutate` lines, `baseline` (the tests pass unmutated), `exec`;
3. a report per group in WORK/reports/<group>.md: killed / survived / timeout counts and
   each survivor's diff, and a summary line per group on stdout.

    python tests/mutation/mutate.py                 # every group
    python tests/mutation/mutate.py metrics         # one group
    python tests/mutation/mutate.py --resume metrics  # go on after an interruption
    python tests/mutation/mutate.py --recheck metrics # after adding tests: rerun the survivors
    MUTATE_DIR=/tmp/m python tests/mutation/mutate.py --list
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUPS = Path(__file__).with_name("groups.toml")
# pyproject's package-dir, {"chromaflow.stages": "stages", ...}: every mapped folder gets its
# link (a folder without one would be imported unmutated from the editable install)
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
KEEP_OPERATORS = [
    r"ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv|Pow_Mul|"
    r"LShift_RShift|RShift_LShift|BitAnd_BitOr|BitOr_BitAnd|BitXor_BitOr)",
    r"ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is|In_NotIn|NotIn_In)",
    r"ReplaceUnaryOperator_(USub_UAdd|Delete_USub|Delete_Not|Delete_Invert)",
    r"AddNot|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr|ReplaceOrWithAnd",
    r"ReplaceBreakWithContinue|ReplaceContinueWithBreak|NumberReplacer|ZeroIterationForLoop",
]
EXCLUDE_OPERATORS = [rf"core/(?!({'|'.join(KEEP_OPERATORS)})$)"]


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, check=True, text=True, **kwargs)


def prepare(work: Path) -> Path:
    """WORK/src: the committed tree, with `chromaflow/<name>` links to the mapped folders so
    that `import chromaflow.models` from WORK/src finds the copy."""
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    for name, folder in PACKAGE_DIRS.items():
        if name != "chromaflow":
            (src / name.replace(".", "/")).symlink_to(src / folder)
    modules = [name for name in PACKAGE_DIRS if name != "chromaflow"]
    where = subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}, sys; "
                            f"print('\\n'.join(sys.modules[m].__file__ for m in {modules!r}))"],
                           cwd=src, env=dict(os.environ, PYTHONPATH=str(src)), check=True, capture_output=True,
                           text=True).stdout.split()
    outside = [w for w in where if not w.startswith(str(src))]
    if outside:
        raise SystemExit(f"mutate: {', '.join(outside)} imported instead of the copy in {src}")
    return src


def line_ranges(module: Path, include: list[str], exclude: list[str]) -> list[str]:
    """Line ranges of the named functions/classes (`Class.method`, `function`, `Class`), or
    of everything but the excluded ones."""
    tree = ast.parse(module.read_text())
    spans: dict[str, tuple[int, int]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            spans[node.name] = (node.lineno, node.end_lineno)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        spans[f"{node.name}.{item.name}"] = (item.lineno, item.end_lineno)
    missing = [name for name in include + exclude if name not in spans]
    if missing:
        raise SystemExit(f"mutate: {module}: no function or class named {', '.join(missing)}")
    if include:
        return [f"{spans[n][0]}-{spans[n][1]}" for n in include]
    lines, start = [], 1
    for first, last in sorted(spans[n] for n in exclude):
        if first > start:
            lines.append(f"{start}-{first - 1}")
        start = last + 1
    return lines + [f"{start}-{len(module.read_text().splitlines())}"]


def write_config(work: Path, src: Path, name: str, group: dict) -> Path:
    module = group["module"]
    tests = " ".join(group["tests"])
    lines = ""
    if group.get("functions") or group.get("exclude"):
        ranges = line_ranges(src / module, group.get("functions", []), group.get("exclude", []))
        lines = f'\n[cosmic-ray.filters.line-filter.lines]\n"{module}" = {json.dumps(ranges)}\n'
    config = work / f"{name}.toml"
    config.write_text(f"""[cosmic-ray]
module-path = "{module}"
timeout = {float(group.get("timeout", 120))}
excluded-modules = []
test-command = "env PYTHONPATH={src} HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 {sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = {json.dumps(EXCLUDE_OPERATORS)}
{lines}""")
    return config


def session_results(session: Path, src: Path) -> list[tuple[dict, dict]]:
    dump = run([cosmic_ray_tool("cosmic-ray"), "dump", str(session)], src, capture_output=True)
    return [tuple(json.loads(line)) for line in dump.stdout.splitlines() if line.strip()]


def report(name: str, results: list, out: Path) -> str:
    counts: dict[str, int] = {}
    survivors = []
    for item, result in results:
        if result is None:
            outcome = "not run"
        elif result.get("worker_outcome") == "skipped":
            continue
        elif result.get("worker_outcome") != "normal":
            outcome = result.get("worker_outcome", "?")  # e.g. timeout, exception
        else:
            outcome = "killed" if result.get("test_outcome") == "killed" else result.get("test_outcome", "?")
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "survived":
            survivors.append((item, result))
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)  # a mutant that hangs the tests is caught
    line = f"{name}: {total} mutants, {killed} killed ({100 * killed / max(total, 1):.1f}%), " + ", ".join(
        f"{k} {v}" for k, v in sorted(counts.items()))
    body = [f"# {line}", ""]
    for item, result in survivors:
        for mutation in item["mutations"]:
            body.append(f"## {mutation['module_path']}:{mutation['start_pos'][0]} {mutation['operator_name']}")
        body += ["```diff", result.get("diff", "").strip(), "```", ""]
    out.write_text("\n".join(body))
    return line


def cosmic_ray_tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def annotation_spans(module: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the type annotations of a module: with `from __future__ import
    annotations` they are strings that never run, so `str | None` -> `str & None` there is an
    equivalent mutant by construction."""
    spans = []
    for node in ast.walk(ast.parse(module.read_text())):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            notes = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
                     if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            notes = [node.annotation]
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in notes if n is not None]
    return spans


def skip_annotation_mutants(session: Path, src: Path, module: str) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    if "from __future__ import annotations" not in (src / module).read_text():
        return
    spans = annotation_spans(src / module)
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.work_items:
            if all(any(a <= tuple(m.start_pos) and tuple(m.end_pos) <= b for a, b in spans) for m in item.mutations):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def new_session(work: Path, src: Path, name: str, group: dict, keep: str | None = None) -> tuple[Path, Path]:
    """The group's config and a filtered session database (what has no result yet is run).

    keep="resume": an earlier session of the same module source goes on where it stopped;
    keep="recheck": the same, and its survivors run again (after tests were added: a mutant
    once killed stays killed as long as no test is removed)."""
    config = write_config(work, src, name, group)
    session = work / f"{name}.sqlite"
    stamp = work / f"{name}.module.sha256"
    # what decides the set of mutants: the module's source and the filters (not the tests)
    selection = json.dumps([group.get("functions"), group.get("exclude"), EXCLUDE_OPERATORS]).encode()
    digest = hashlib.sha256((src / group["module"]).read_bytes() + selection).hexdigest()
    if keep and session.is_file() and stamp.is_file() and stamp.read_text() == digest:
        if keep == "recheck":
            with sqlite3.connect(session) as db:
                db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
        skip_annotation_mutants(session, src, group["module"])  # (sessions made before this filter)
        return config, session
    session.unlink(missing_ok=True)
    run([cosmic_ray_tool("cosmic-ray"), "init", str(config), str(session)], src)
    run([cosmic_ray_tool("cr-filter-operators"), str(session), str(config)], src)
    if "line-filter" in config.read_text():
        run([cosmic_ray_tool("cr-filter-lines"), "--config", str(config), str(session)], src)
    run([cosmic_ray_tool("cr-filter-pragma"), str(session)], src)
    skip_annotation_mutants(session, src, group["module"])
    stamp.write_text(digest)
    return config, session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", help="groups of groups.toml (default: all)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument("--count", action="store_true", help="only count each group's mutants")
    parser.add_argument("--resume", action="store_true", help="go on with an interrupted session")
    parser.add_argument("--recheck", action="store_true", help="resume, and run the survivors again")
    args = parser.parse_args()
    groups = tomllib.loads(GROUPS.read_text())
    if args.list:
        for name, group in groups.items():
            print(f"{name}: {group['module']} <- {' '.join(group['tests'])}")
        return
    unknown = [g for g in args.groups if g not in groups]
    if unknown:
        raise SystemExit(f"mutate: unknown group(s) {', '.join(unknown)}; see {GROUPS}")
    work = Path(os.environ.get("MUTATE_DIR", "/tmp/chromaflow-mutate")).resolve()
    src = prepare(work)
    (work / "reports").mkdir(exist_ok=True)
    lines = []
    for name in args.groups or list(groups):
        keep = "recheck" if args.recheck else "resume" if args.resume else None
        config, session = new_session(work, src, name, groups[name], keep)
        if args.count:
            todo = [r for _, r in session_results(session, src) if not (r and r.get("worker_outcome") == "skipped")]
            print(f"{name}: {len(todo)} mutants to run", flush=True)
            continue
        run([cosmic_ray_tool("cosmic-ray"), "baseline", str(config)], src)
        run([cosmic_ray_tool("cosmic-ray"), "exec", str(config), str(session)], src)
        lines.append(report(name, session_results(session, src), work / "reports" / f"{name}.md"))
        print(lines[-1], flush=True)
    print(f"reports: {work / 'reports'}")


if __name__ == "__main__":
    main()
