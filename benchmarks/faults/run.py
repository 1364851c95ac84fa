"""Bad input and faults, tried as a user would: each case with its exit code and message.

    python benchmarks/faults/run.py [OUT_DIR]     (writes benchmarks/faults/README.md)

Every case runs ``ddtool`` as its own process on Fashion-MNIST (a tiny buffer made first), so what
is recorded is exactly what a user sees. Exit codes: 0 done, 2 usage or input error, 3 diverged,
130 / 143 interrupted after writing a checkpoint, anything else a bug.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DDTOOL = [sys.executable, "-m", "ddtoolbox.cli"]
SMALL = ["--syn-steps", "5", "--expert-epochs", "1", "--max-start-epoch", "2", "--ipc", "2", "--quiet",
         "--device", "cpu", "--threads", "1"]


def ddtool(*argv, env=None, timeout=600):
    r = subprocess.run([*DDTOOL, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return r.returncode, r.stderr


def interrupted(argv, out, sig, after=1):
    """Start ``ddtool argv``, wait for a checkpoint at ``after``, send ``sig``; exit code and stderr."""
    proc = subprocess.Popen([*DDTOOL, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(Path(out) / "checkpoint.pt", weights_only=True)["iteration"] >= after:
                break
        except (FileNotFoundError, RuntimeError, EOFError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def message(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if any("Traceback" in line for line in lines):
        return "TRACEBACK: " + lines[-1]
    return " / ".join(lines[-2:]) if lines else "(nothing)"


def main(work: Path) -> list[dict]:
    buf, rows = work / "buffer", []

    def case(name, expected, code, err):
        rows.append({"case": name, "expected": expected, "exit": code, "message": message(err)})
        print(f"[{code:>3}] {name}: {message(err)[:160]}", flush=True)

    code, err = ddtool("buffer", "--out", buf, "--num-experts", "2", "--epochs", "3", "--width", "8",
                       "--train-subset", "30", "--device", "cpu", "--quiet")
    assert code == 0, err
    d = lambda out, *extra: ["distill", "--buffer", buf, "--out", out, *SMALL, *extra]  # noqa: E731

    # ---------------------------------------------------------------- faults during a run
    out = work / "sigterm"
    case("SIGTERM mid-run", "143, checkpoint", *interrupted(d(out, "--iterations", "60", "--checkpoint-every", "1"),
                                                            out, signal.SIGTERM))
    case("... then --resume", "0", *ddtool("distill", "--resume", "--out", out))
    out = work / "sigint"
    case("SIGINT (Ctrl-C) mid-run", "130, checkpoint", *interrupted(d(out, "--iterations", "60", "--checkpoint-every", "1"), out,
                                                                   signal.SIGINT, 2))
    out = work / "kill9"
    code, err = interrupted(d(out, "--iterations", "60", "--checkpoint-every", "5"), out, signal.SIGKILL, 5)
    case("kill -9 mid-run", "killed (-9), checkpoint kept", code, err or "(killed)")
    case("... then --resume", "0", *ddtool("distill", "--resume", "--out", out))
    case("--resume with a contradicting --lr-img", "2",
         *ddtool("distill", "--resume", "--out", work / "sigint", "--lr-img", "5"))
    case("--resume where there is no checkpoint", "2", *ddtool("distill", "--resume", "--out", work / "none"))
    damaged = work / "damaged-buffer"
    shutil.copytree(buf, damaged)
    (damaged / "expert_001.pt").write_bytes(b"")
    case("distill with an empty expert file", "2 before any iteration",
         *ddtool("distill", "--buffer", damaged, "--out", work / "dmg", *SMALL, "--iterations", "3"))
    case("buffer --resume retrains the damaged expert", "0, warning",
         *ddtool("buffer", "--out", damaged, "--num-experts", "2", "--epochs", "3", "--width", "8", "--train-subset",
                 "30", "--device", "cpu", "--quiet", "--resume"))

    # ---------------------------------------------------------------- divergence
    case("--lr-img 1e12", "3, no result", *ddtool(*d(work / "div", "--iterations", "5", "--lr-img", "1e12")))
    case("--lr-img 1e12 --on-divergence skip", "0, skips counted",
         *ddtool(*d(work / "skip", "--iterations", "5", "--lr-img", "1e12", "--on-divergence", "skip")))
    case("--lr-img nan", "2", *ddtool(*d(work / "nan", "--iterations", "1", "--lr-img", "nan")))
    case("--lr-img 1e40", "2", *ddtool(*d(work / "big", "--iterations", "1", "--lr-img", "1e40")))
    case("datm --lr-y nan", "2", *ddtool(*d(work / "lry", "--iterations", "1", "--matcher", "datm", "--lr-y", "nan")))
    case("learned lr pinned at its floor", "0, one warning",
         *ddtool(*d(work / "floor", "--iterations", "55", "--lr-teacher", "1e-8", "--lr-lr", "0")))
    case("buffer --lr 1e10", "0, chance warning",
         *ddtool("buffer", "--out", work / "hot", "--num-experts", "1", "--epochs", "1", "--width", "8", "--train-subset",
                 "30", "--lr", "1e10", "--device", "cpu", "--quiet"))

    # ---------------------------------------------------------------- outputs
    (work / "afile").write_text("x")
    case("--out is a file", "2 at once", *ddtool(*d(work / "afile", "--iterations", "1")))
    case("--out under a file", "2 at once", *ddtool(*d(work / "afile" / "sub", "--iterations", "1")))
    good = work / "good"
    assert ddtool(*d(good, "--iterations", "1"))[0] == 0
    case("--out holds a finished result", "2", *ddtool(*d(good, "--iterations", "1")))
    case("... with --overwrite", "0", *ddtool(*d(good, "--iterations", "1", "--overwrite")))
    (work / "json-dir").mkdir()
    case("eval --json is a folder", "2 before training",
         *ddtool("eval", "--synthetic", good / "synthetic.pt", "--json", work / "json-dir", "--runs", "1",
                 "--epochs", "1", "--device", "cpu"))
    record = torch.load(good / "synthetic.pt", weights_only=True)
    record["images"] = record["images"] * 2
    torch.save(record, good / "synthetic.pt")
    case("eval of a set that is not the one its run published", "2",
         *ddtool("eval", "--synthetic", good / "synthetic.pt", "--runs", "1", "--epochs", "1", "--device", "cpu"))
    locked = work / "locked"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from ddtoolbox.outputs import OutputLock; "
                               f"lock = OutputLock({str(locked)!r}); lock.__enter__(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    case("a second distill into a folder being written", "2 at once", *ddtool(*d(locked, "--iterations", "1")))
    case("a second buffer into a folder being written", "2 at once",
         *ddtool("buffer", "--out", locked, "--num-experts", "1", "--epochs", "1", "--width", "8", "--train-subset",
                 "30", "--device", "cpu", "--quiet"))
    holder.kill()
    holder.wait()
    case("after the holder was killed", "0", *ddtool(*d(locked, "--iterations", "1")))

    # ---------------------------------------------------------------- bad files and values
    meta = json.loads((buf / "buffer.json").read_text())
    edited = work / "edited-buffer"
    shutil.copytree(buf, edited)
    (edited / "buffer.json").write_text(json.dumps({**meta, "epochs": "three"}))
    case("buffer.json with epochs = \"three\"", "2",
         *ddtool("distill", "--buffer", edited, "--out", work / "e1", *SMALL, "--iterations", "1"))
    (edited / "buffer.json").write_text(json.dumps({**meta, "experts": [{"file": "../../etc/passwd"}]}))
    case("buffer.json naming a file outside the buffer", "2",
         *ddtool("distill", "--buffer", edited, "--out", work / "e2", *SMALL, "--iterations", "1"))
    bad = torch.load(work / "sigterm" / "synthetic.pt", weights_only=True)
    bad["meta"]["published"] = False
    for name, change in [("3 channels", lambda r: r.__setitem__("images", r["images"].repeat(1, 3, 1, 1))),
                         ("labels out of range", lambda r: r.__setitem__("labels", r["labels"] + 40)),
                         ("an lr vector", lambda r: r.__setitem__("lr", torch.tensor([0.01, 0.02]))),
                         ("0 images", lambda r: (r.__setitem__("images", r["images"][:0]),
                                                 r.__setitem__("labels", r["labels"][:0]))),
                         ("14x14 images", lambda r: r.__setitem__("images", r["images"][:, :, :14, :14])),
                         ("meta ipc = \"ten\"", lambda r: r["meta"].__setitem__("ipc", "ten"))]:
        record = {k: (v.clone() if isinstance(v, torch.Tensor) else json.loads(json.dumps(v))) for k, v in bad.items()}
        change(record)
        torch.save(record, work / "bad.pt")
        case(f"eval of a synthetic set with {name}", "2",
             *ddtool("eval", "--synthetic", work / "bad.pt", "--runs", "1", "--epochs", "1", "--device", "cpu"))
    case("--device mps", "2", *ddtool(*d(work / "mps", "--iterations", "1", "--device", "mps")))
    case("--seed 99999999999999", "2", *ddtool(*d(work / "seed", "--iterations", "1", "--seed", "99999999999999")))
    case("DDTOOL_DATA pointing nowhere", "0, one warning",
         *ddtool(*d(work / "env", "--iterations", "1"), env={"DDTOOL_DATA": "/nowhere"}))
    bomb = work / "bomb" / "train" / "a"
    bomb.mkdir(parents=True)
    (work / "bomb" / "test" / "a").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (20000, 20000)).save(bomb / "x.png")
    shutil.copy(bomb / "x.png", work / "bomb" / "test" / "a" / "x.png")
    case("a decompression-bomb image", "2",
         *ddtool("eval", "--random-ipc", "1", "--dataset", f"imagefolder:{work / 'bomb'}", "--runs", "1",
                 "--epochs", "1", "--device", "cpu"))
    spec = work / "spec.toml"
    spec.write_text(f'[bench]\ndatasets = ["fashion-mnist"]\nipcs = [1]\n[buffer]\nnum_experts = 1\n'
                    f'[methods.A]\nmatcher = "mtt"\n[methods.B]\nmatcher = "mtx"\n')
    case("bench spec with a misspelt matcher", "2 before any cell", *ddtool("bench", spec, "--out", work / "bench"))
    return rows


def write(rows: list[dict], seconds: float) -> Path:
    import ddtoolbox

    lines = ["# Bad input and faults, tried as a user would", "",
             f"`python benchmarks/faults/run.py` on {platform.node()} ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, ddtoolbox {ddtoolbox.__version__}; {len(rows)} cases in {seconds:.0f} s.",
             "", "Exit codes: 0 done, 2 usage or input error, 3 diverged, 130 / 143 interrupted (resumable), "
             "-9 killed by the test itself.", "",
             "| case | expected | exit | what ddtool said (last lines of stderr) |", "|---|---|---:|---|"]
    for r in rows:
        text = r["message"].replace("|", "\\|").replace(str(Path(tempfile.gettempdir())), "/tmp")
        lines.append(f"| {r['case']} | {r['expected']} | {r['exit']} | {text} |")
    path = HERE / "README.md"
    path.write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return path


if __name__ == "__main__":
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)
        rows = main(work)
    print(f"wrote {write(rows, time.time() - start)}")
