"""Runs Triton's qa/L0_* Python tests, unchanged, against nereid.

Started by scripts/triton-qa.sh, which finds the local copy of Triton's
server repository and the client's virtual environment. This file does the
rest, in the order a suite's test.sh does it:

1. exports the chosen revision's qa/ (and TRITON_VERSION) into
   target/triton-qa/src/<commit>/ (a disposable copy the tests may write
   their logs into; nothing of it is committed);
2. generates the models the suites need with Triton's own
   qa/common/gen_qa_*.py generators, run unchanged with --onnx / --ensemble,
   into target/triton-qa/models/<commit>/ (once; a stamp marks each done);
3. for each run of a suite (suites.py says which model repository, which
   server flags, which environment, which tests, and which tests are left
   out and why), builds the run's model repository, starts nereid on the
   ports the tests expect (8000/8001/8002), waits for /v2/health/ready,
   runs the tests with pytest (the files are unittest files; pytest runs
   them unchanged and writes JUnit XML), and stops the server;
4. prints a table per suite and writes it, with every test's outcome and
   failure message, to target/triton-qa/results/.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import io
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import suites  # noqa: E402

PORTS = (8000, 8001, 8002)


@dataclass
class Outcome:
    suite: str
    run: str
    test: str
    outcome: str  # passed | failed | error | skipped | excluded
    message: str = ""
    seconds: float = 0.0


@dataclass
class Ctx:
    qa: Path
    examples: Path
    models: Path
    work: Path
    results: Path
    nereid_bin: Path
    nereid_models: Path
    python: str
    keyword: str | None
    outcomes: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- sources


def export_qa(triton_repo: Path, ref: str, dest_root: Path) -> Path:
    """What the suites need of `ref` (suites.TRITON_PATHS), in a disposable copy under target/."""
    if ref == "worktree":
        dest = dest_root / "worktree"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for path in suites.TRITON_PATHS:
            if (triton_repo / path).exists():
                shutil.copytree(triton_repo / path, dest / path, symlinks=True)
        shutil.copy(triton_repo / "TRITON_VERSION", dest / "TRITON_VERSION")
        return dest
    commit = subprocess.check_output(
        ["git", "-C", str(triton_repo), "rev-parse", ref + "^{commit}"], text=True
    ).strip()
    dest = dest_root / commit[:12]
    stamp = dest / ".exported"
    if stamp.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    tar = subprocess.check_output(
        ["git", "-C", str(triton_repo), "archive", commit, "TRITON_VERSION", "--",
         *[p for p in suites.TRITON_PATHS
           if subprocess.call(["git", "-C", str(triton_repo), "cat-file", "-e", f"{commit}:{p}"],
                              stderr=subprocess.DEVNULL) == 0]]
    )
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="tar")
    stamp.write_text(commit + "\n")
    return dest


def generate_models(ctx: Ctx, src: Path):
    """Triton's generators, unchanged, for the ONNX and ensemble models."""
    common = src / "qa" / "common"
    onnx_version = subprocess.check_output(
        [ctx.python, "-c", "import onnx; print(onnx.__version__)"], text=True
    ).strip()
    jobs = [
        ("qa_model_repository", "gen_qa_models.py", ["--onnx"]),
        ("qa_variable_model_repository", "gen_qa_models.py", ["--onnx", "--variable"]),
        ("qa_identity_model_repository", "gen_qa_identity_models.py", ["--onnx"]),
        ("qa_sequence_model_repository", "gen_qa_sequence_models.py", ["--onnx"]),
        (
            "qa_variable_sequence_model_repository",
            "gen_qa_sequence_models.py",
            ["--onnx", "--variable"],
        ),
        ("qa_dyna_sequence_model_repository", "gen_qa_dyna_sequence_models.py", ["--onnx"]),
        (
            "qa_ensemble_model_repository/qa_model_repository",
            "gen_qa_models.py",
            ["--ensemble"],
        ),
        (
            "qa_ensemble_model_repository/qa_variable_model_repository",
            "gen_qa_models.py",
            ["--ensemble", "--variable"],
        ),
        (
            "qa_ensemble_model_repository/qa_identity_model_repository",
            "gen_qa_identity_models.py",
            ["--ensemble"],
        ),
        (
            "qa_ensemble_model_repository/qa_sequence_model_repository",
            "gen_qa_sequence_models.py",
            ["--ensemble"],
        ),
        (
            "qa_ensemble_model_repository/qa_variable_sequence_model_repository",
            "gen_qa_sequence_models.py",
            ["--ensemble", "--variable"],
        ),
    ]
    for dest, script, flags in jobs:
        out = ctx.models / dest
        stamp = out / ".generated"
        want = " ".join([script] + flags + [f"(onnx {onnx_version})"])
        if stamp.exists() and stamp.read_text().strip() == want:
            continue
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        log(f"  generating {dest} ({script} {' '.join(flags)})")
        genlog = ctx.models / (dest.replace("/", "_") + ".gen.log")
        with open(genlog, "w") as f:
            rc = subprocess.call(
                [ctx.python, script, *flags, f"--models_dir={out}"],
                cwd=common,
                stdout=f,
                stderr=subprocess.STDOUT,
            )
        if rc != 0:
            sys.exit(f"triton-qa: {script} {' '.join(flags)} failed; see {genlog}")
        stamp.write_text(want + "\n")


# ----------------------------------------------------------------- server


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def http_status(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Server:
    """nereid for one run: started on Triton's ports, always stopped."""

    def __init__(self, ctx: Ctx, args, env, log_path: Path, ready_timeout=120):
        self.ctx, self.args, self.env, self.log_path = ctx, args, env, log_path
        self.ready_timeout = ready_timeout
        self.proc = None

    def start(self):
        busy = [p for p in PORTS if not port_free(p)]
        if busy:
            raise RuntimeError(f"ports {busy} are in use (the tests expect 8000/8001/8002)")
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.ctx.nereid_bin), *self.args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nereid exited with {self.proc.returncode} at startup: {self.log_tail()}"
                )
            if http_status("http://127.0.0.1:8000/v2/health/ready") == 200:
                return "ready"
            # Readiness is polled, not waited out: the poll returns as soon
            # as the server answers.
            time.sleep(0.05)
        if http_status("http://127.0.0.1:8000/v2/health/live") == 200:
            return f"live but not ready after {self.ready_timeout}s: {self.log_tail()}"
        raise RuntimeError(f"nereid not live after {self.ready_timeout}s: {self.log_tail()}")

    def log_tail(self, n=3):
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def error_lines(self, n=8):
        """The log's error records (E...), shortened, for the summary."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        errs = [ln.split("] ", 1)[-1][:300] for ln in lines if ln.startswith("E")]
        if len(errs) > n:
            errs = errs[:n] + [f"... and {len(errs) - n} more"]
        return errs

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log_file.close()


# ------------------------------------------------------------------ tests


def first_line(text, limit=400):
    text = (text or "").strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def parse_junit(path: Path, suite, run):
    out = []
    if not path.exists():
        return out
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        cls = case.get("classname", "")
        name = case.get("name", "")
        test = f"{cls.split('.')[-1]}.{name}" if cls else name
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = el.get("message") or first_line(el.text)
                # pytest's message for an error in a unittest is often the
                # whole traceback's first line; the last "Error:" line says more.
                body = (el.text or "").strip().splitlines()
                errs = [ln.strip() for ln in body if ln.startswith("E ")]
                if errs and tag != "skipped":
                    message = errs[0][1:].strip()
                    more = [e[1:].strip() for e in errs[1:3]]
                    if more and len(message) < 80:
                        message = " ".join([message] + more)
                break
        out.append(
            Outcome(suite, run, test, outcome, message[:500], float(case.get("time", 0)))
        )
    return out


def run_tests(ctx: Ctx, suite, run, server_env, result_path: Path, test_log: Path):
    """The run's tests, each file in its own process, selected as test.sh does."""
    env = dict(os.environ)
    env.update(server_env)
    env.update(run.env)
    env.setdefault("TRITONSERVER_IPADDR", "localhost")
    by_file = {}
    for t in run.tests:
        file, _, name = t.partition("::")
        by_file.setdefault(file, []).append(name.replace("::", "."))
    outcomes = []
    deadline = time.monotonic() + run.timeout
    with open(test_log, "w") as f:
        for i, (file, names) in enumerate(by_file.items()):
            names = [n for n in names if n]
            out = result_path.with_suffix(f".{i}.{'xml' if run.pytest else 'json'}")
            skip = [
                t.partition("::")[2].replace("::", ".")
                for t, _ in run.excluded
                if t.partition("::")[0] == file and t.partition("::")[2]
            ]
            if run.pytest:
                args = [
                    ctx.python, "-m", "pytest", "-p", "no:cacheprovider",
                    "-o", "junit_family=xunit1", f"--junitxml={out}",
                    f"--timeout={run.test_timeout}", "-rA",
                    *([f"{file}::{n.replace('.', '::')}" for n in names] or [file]),
                    *[f"--deselect={file}::{sk.replace('.', '::')}" for sk in skip],
                ]
                if ctx.keyword:
                    args += ["-k", ctx.keyword]
            else:
                args = [ctx.python, str(HERE / "unittest_run.py"), str(out), file, *names]
                for sk in skip:
                    args += ["--skip", sk]
                if ctx.keyword:
                    args += ["-k", ctx.keyword]
            f.write(f"$ {' '.join(args)}\n")
            f.flush()
            proc = subprocess.Popen(
                args,
                cwd=ctx.qa / suite.dir,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                timed_out = True
            got = (
                parse_junit(out, suite.name, run.name)
                if run.pytest
                else parse_json(out, suite.name, run.name)
            )
            if timed_out:
                got.append(
                    Outcome(
                        suite.name, run.name, f"{file} {' '.join(names)}".strip(), "error",
                        f"runner: the test process ran past the run's {run.timeout}s and was"
                        " killed (tests not reported did not finish)",
                    )
                )
            elif not got and not ctx.keyword:
                got.append(
                    Outcome(
                        suite.name, run.name, f"{file} {' '.join(names)}".strip(), "error",
                        f"runner: {file} reported no test (exit {proc.returncode}): "
                        + one_line(tail(test_log, 3)),
                    )
                )
            outcomes += got
    return outcomes


def parse_json(path: Path, suite, run):
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        Outcome(suite, run, r["test"], r["outcome"], r["message"], r["seconds"]) for r in records
    ]


def one_line(text, limit=400):
    return " ".join(p.strip() for p in text.splitlines() if p.strip())[:limit]


def tail(path: Path, n=5):
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def do_run(ctx: Ctx, suite, run):
    tag = f"{suite.name}.{run.name}"
    logs = ctx.results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for test, reason in run.excluded:
        ctx.outcomes.append(Outcome(suite.name, run.name, test, "excluded", reason))
    if not run.tests:
        return
    repo_dir = ctx.work / suite.name / run.name
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    repo_dir.mkdir(parents=True)
    run.build(suites.Builder(ctx, repo_dir))
    t0 = time.monotonic()
    junit, client_log = logs / f"{tag}.result", logs / f"{tag}.client.log"
    if not run.server:
        # The test starts "tritonserver" itself: it finds nereid under
        # that name first on PATH.
        shim = ctx.work / "bin"
        shim.mkdir(parents=True, exist_ok=True)
        link = shim / "tritonserver"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ctx.nereid_bin)
        env = {"PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
        log(f"  {tag}: the test starts nereid as tritonserver")
        outcomes = run_tests(ctx, suite, run, env, junit, client_log)
    else:
        args = [a.replace("{repo}", str(repo_dir)) for a in run.server_args]
        server_env = dict(os.environ)
        server_env.update(run.server_env)
        server = Server(ctx, args, server_env, logs / f"{tag}.server.log")
        log(f"  {tag}: nereid {' '.join(args)}")
        try:
            try:
                state = server.start()
            except RuntimeError as e:
                # Where tritonserver would have started (test.sh goes on),
                # nereid refusing to is a failure of its own; the tests then
                # still run with the models that do load, so that one
                # refused model does not hide the rest of the suite.
                errors = server.error_lines()
                ctx.notes.append(
                    f"{tag}: nereid refused to start with test.sh's flags ({e});"
                    " the tests ran with --exit-on-error=false --strict-readiness=false. Its errors: "
                    + (" | ".join(errors) or "none logged")
                )
                log(f"    nereid refused to start; again with --exit-on-error=false: {e}")
                fallback = ["--exit-on-error=false", "--strict-readiness=false"]
                server = Server(ctx, args + fallback, server_env,
                                logs / f"{tag}.server.log")
                try:
                    state = server.start()
                except RuntimeError as e2:
                    for test in run.tests:
                        ctx.outcomes.append(
                            Outcome(suite.name, run.name, test, "error", f"runner: {e2}")
                        )
                    log(f"    server did not start: {e2}")
                    return
            if state != "ready":
                log(f"    warning: {state}")
            outcomes = run_tests(
                ctx, suite, run, {"SERVER_PID": str(server.proc.pid)}, junit, client_log
            )
        finally:
            server.stop()
    ctx.outcomes.extend(outcomes)
    passed = sum(o.outcome == "passed" for o in outcomes)
    log(f"    {passed}/{len(outcomes)} passed ({time.monotonic() - t0:.0f}s)")


# ---------------------------------------------------------------- results


def summarize(ctx: Ctx, suite_names, meta):
    rows = []
    for name in suite_names:
        os_ = [o for o in ctx.outcomes if o.suite == name]
        ran = [o for o in os_ if o.outcome in ("passed", "failed", "error")]
        rows.append(
            {
                "suite": name,
                "run": len(ran),
                "passed": sum(o.outcome == "passed" for o in os_),
                "failed": sum(o.outcome in ("failed", "error") for o in os_),
                "skipped": sum(o.outcome == "skipped" for o in os_),
                "excluded": sum(o.outcome == "excluded" for o in os_),
            }
        )
    lines = [
        f"# Triton QA against nereid ({meta['date']})",
        "",
        f"nereid: `{meta['nereid']}`; tests: Triton {meta['version']} qa/ at {meta['ref']}"
        f" ({meta['commit']}), tritonclient {meta['client']}",
        "",
        "| suite | run | passed | failed | skipped (by the test) | left out (by the runner) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['suite']} | {r['run']} | {r['passed']} | {r['failed']} |"
            f" {r['skipped']} | {r['excluded']} |"
        )
    tot = {k: sum(r[k] for r in rows) for k in ("run", "passed", "failed", "skipped", "excluded")}
    lines.append(
        f"| **all** | {tot['run']} | {tot['passed']} | {tot['failed']} |"
        f" {tot['skipped']} | {tot['excluded']} |"
    )
    notes = [n for n in ctx.notes if n.split(".", 1)[0] in suite_names]
    if notes:
        lines += ["", "## Server start", ""] + [f"- {n}" for n in notes]
    for title, kinds in (
        ("Failures", ("failed", "error")),
        ("Skipped by the tests", ("skipped",)),
        ("Left out by the runner", ("excluded",)),
    ):
        sel = [o for o in ctx.outcomes if o.outcome in kinds and o.suite in suite_names]
        if not sel:
            continue
        lines += ["", f"## {title}", ""]
        for o in sel:
            lines.append(f"- {o.suite} [{o.run}] `{o.test}`: {o.message}")
    text = "\n".join(lines) + "\n"
    ctx.results.mkdir(parents=True, exist_ok=True)
    (ctx.results / "summary.md").write_text(text)
    (ctx.results / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "suites": rows,
                "notes": ctx.notes,
                "tests": [o.__dict__ for o in ctx.outcomes],
            },
            indent=1,
        )
    )
    return rows, tot


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--triton-repo", required=True, type=Path)
    p.add_argument("--ref", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("-k", dest="keyword", help="pytest -k expression for every run")
    p.add_argument("--list", action="store_true", help="list the suites and runs, run nothing")
    p.add_argument("suites", nargs="*", help="suites to run (default: all)")
    a = p.parse_args()

    names = a.suites or list(suites.SUITES)
    unknown = [n for n in names if n not in suites.SUITES]
    if unknown:
        sys.exit(f"triton-qa: unknown suite(s) {unknown}; known: {', '.join(suites.SUITES)}")
    if a.list:
        for n in names:
            s = suites.SUITES[n]
            print(n)
            for r in s.runs:
                print(f"  {r.name}: {' '.join(r.tests)}")
                for t, why in r.excluded:
                    print(f"    left out {t}: {why}")
        return 0

    nereid_bin = Path(os.environ.get("NEREID_BIN") or ROOT / "target/release/nereid").resolve()
    if not os.access(nereid_bin, os.X_OK):
        sys.exit(f"triton-qa: no nereid binary at {nereid_bin} (build it or set NEREID_BIN)")
    base = ROOT / "target" / "triton-qa"
    log(f"==> exporting qa/ of {a.ref} from {a.triton_repo}")
    src = export_qa(a.triton_repo, a.ref, base / "src")
    commit = src.name
    ctx = Ctx(
        qa=src / "qa",
        examples=src / "docs" / "examples" / "model_repository",
        models=base / "models" / commit,
        work=base / "repos",
        results=Path(os.environ.get("TRITON_QA_RESULTS") or base / "results"),
        nereid_bin=nereid_bin,
        nereid_models=ROOT / "model_repository",
        python=sys.executable,
        keyword=a.keyword,
    )
    log("==> generating models with Triton's generators (cached)")
    generate_models(ctx, src)
    if ctx.results.exists():
        shutil.rmtree(ctx.results)
    ctx.results.mkdir(parents=True)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    client = subprocess.check_output(
        [ctx.python, "-c", "import importlib.metadata as m; print(m.version('tritonclient'))"],
        text=True,
    ).strip()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nereid": str(nereid_bin),
        "ref": a.ref,
        "commit": commit,
        "version": a.version,
        "client": client,
    }
    for n in names:
        s = suites.SUITES[n]
        log(f"==> {n}")
        for r in s.runs:
            do_run(ctx, s, r)
    rows, tot = summarize(ctx, names, meta)
    print()
    print((ctx.results / "summary.md").read_text().split("\n## ")[0])
    print(f"results: {ctx.results}/summary.md, results.json, logs/")
    # The plain closing line CI-style readers count.
    print(f"triton-qa: {tot['passed']} passed, {tot['failed']} failed, {tot['skipped']} skipped")
    return 0 if tot["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
