"""Bad input and faults, tried as a user would: each case with its exit code and message.

    python benchmarks/faults/run.py [WORK_DIR]     (writes benchmarks/faults/README.md)
    FAULTS_SECTIONS=issue,grid python benchmarks/faults/run.py     (only those sections)
    FAULTS_SECTIONS=startup FAULTS_APPEND=1 python ...      (rerun some, keeping the other cases' results)

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
DDTOOL = [sys.executable, "-m", "ddtoolbox"]   # what the ddtool script runs, start-up guard included
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


def signalled(argv, sig, seconds, env=None):
    """Start ``ddtool argv`` in its own session, send ``sig`` after ``seconds``; exit code and stderr."""
    # a shell's background job inherits SIGINT ignored; a user's Ctrl-C reaches a process that does not ignore it
    proc = subprocess.Popen([*DDTOOL, *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(seconds)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def limited(argv, max_bytes):
    """``ddtool argv`` under ``ulimit -f`` (RLIMIT_FSIZE): writing past it fails with EFBIG."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    r = subprocess.run([*DDTOOL, *map(str, argv)], capture_output=True, text=True, timeout=600, preexec_fn=limit)
    return r.returncode, r.stderr


def clean(code, err: str) -> bool:
    """Exit 0/2/3/4/130/143, no traceback, and (when it failed) one line besides warnings."""
    if code not in (0, 2, 3, 4, 130, 143) or "Traceback" in err:
        return False
    lines = [line for line in err.splitlines() if line.strip() and "warning" not in line.lower()]
    return code == 0 or len(lines) == 1


def message(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if any("Traceback" in line for line in lines):
        return "TRACEBACK: " + lines[-1]
    return " / ".join(lines[-2:]) if lines else "(nothing)"


def main(work: Path, sections=("issue", "grid", "original")) -> list[dict]:
    """The cases in ``sections``; README.md is rewritten after every case, so a cut run still shows its tally."""
    buf, good, rows, start = work / "buffer", work / "good", [], time.time()

    def case(name, expected, code, err, command=None):
        command = command or name.split()[0].strip("`")
        rows.append({"case": name, "expected": expected, "exit": code, "message": message(err),
                     "clean": clean(code, err) or code == -9, "command": command if command in COMMANDS else "distill"})
        print(f"[{code:>3}] {name}: {message(err)[:160]}", flush=True)
        write(rows, time.time() - start)

    if not (buf / "buffer.json").exists():        # a rerun in the same WORK_DIR keeps the tiny buffer and set
        code, err = ddtool("buffer", "--out", buf, "--num-experts", "2", "--epochs", "3", "--width", "8",
                           "--train-subset", "30", "--device", "cpu", "--quiet")
        assert code == 0, err
    d = lambda out, *extra: ["distill", "--buffer", buf, "--out", out, *SMALL, *extra]  # noqa: E731
    assert ddtool(*d(good, "--iterations", "1", "--overwrite"))[0] == 0
    (work / "afile").write_text("x")
    if "issue" in sections:
        issue_cases(work, buf, good, case)
    if "efbig" in sections:
        efbig_cases(work, case)
    if "startup" in sections:
        startup_cases(work, buf, case)
    if "grid" in sections:
        grid(work, buf, good, case)
    if "original" in sections:
        original(work, buf, good, d, case)
    return rows


def original(work: Path, buf: Path, good: Path, d, case) -> None:
    """The first cases (before issue 23): faults during a run, divergence, outputs, bad files and values."""

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
    case("--out is a file", "2 at once", *ddtool(*d(work / "afile", "--iterations", "1")))
    case("--out under a file", "2 at once", *ddtool(*d(work / "afile" / "sub", "--iterations", "1")))
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


COMMANDS = ("buffer", "distill", "eval", "train-full", "select", "export", "report", "bench", "bench-speed", "presets",
            "plugins", "plugin", "data", "compdd", "demo", "edf-ablation")
CPU = ("--device", "cpu", "--threads", "1")


def tiny_imagefolder(root: Path) -> Path:
    """Ten classes of three 28x28 grey images each, train and test: a dataset that trains in no time."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in range(10):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(3):
                pixels = (torch.rand(28, 28, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


def readonly(work: Path) -> Path:
    """A folder this process cannot write: mode 555, or for root (whom modes do not stop) sysfs."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = work / "readonly"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder


def efbig_cases(work: Path, case) -> None:
    """A file-size limit (``ulimit -f``) smaller than an expert file: EFBIG while writing."""
    case("buffer under ulimit -f 4 KiB (EFBIG)", "2 naming the file",
         *limited(["buffer", "--out", work / "i-efbig", "--num-experts", "1", "--epochs", "1", "--width", "8",
                   "--train-subset", "30", "--quiet", *CPU], 4 * 1024))


def startup_cases(work: Path, buf: Path, case) -> None:
    """SIGINT while Python is still importing, before ddtool's own handlers exist."""
    for t in (0.3, 1.0, 2.0, 4.0):
        case(f"SIGINT {t} s into start-up (imports)", "130, one line, no traceback",
             *signalled(["distill", "--buffer", buf, "--out", work / f"i-startup-{t}", *SMALL, "--iterations", "1"],
                        signal.SIGINT, t), command="distill")


def issue_cases(work: Path, buf: Path, good: Path, case) -> None:
    """Every case issue 23 lists, rerun as a user would."""
    tiny = f"imagefolder:{tiny_imagefolder(work / 'tiny')}"
    d = lambda out, *extra: ["distill", "--buffer", buf, "--out", out, *SMALL, *extra]  # noqa: E731
    bufargs = ["--num-experts", "1", "--epochs", "1", "--width", "8", "--train-subset", "30", "--quiet", *CPU]
    case("buffer --lr 1e30", "3, nothing published",
         *ddtool("buffer", "--out", work / "i-lr", *bufargs, "--lr", "1e30"))
    case("train-full --lr 1e30", "3, nothing stored",
         *ddtool("train-full", "--dataset", tiny, "--epochs", "2", "--width", "8", "--lr", "1e30", "--full-results",
                 work / "i-full.json", "--quiet", *CPU))
    case("eval --lr 1e30", "3, no JSON",
         *ddtool("eval", "--synthetic", good / "synthetic.pt", "--runs", "1", "--epochs", "2", "--lr", "1e30",
                 "--json", work / "i-eval.json", "--quiet", *CPU))
    case("distill --cpd-alpha 0.5 without --plugin cpd", "2", *ddtool(*d(work / "i-cpd", "--iterations", "1",
                                                                         "--cpd-alpha", "0.5")))
    case("distill --dae-beta 3 without --plugin dae", "2", *ddtool(*d(work / "i-dae", "--iterations", "1",
                                                                     "--dae-beta", "3")))
    case("distill --cpd-alpha 0.5 --plugin no:cpd", "0 (meant to be ignored)",
         *ddtool(*d(work / "i-nocpd", "--iterations", "1", "--cpd-alpha", "0.5", "--plugin", "no:cpd")))
    meta = json.loads((buf / "buffer.json").read_text())
    for key in ("mean", "std"):
        for bad in (float("nan"), 0.9):
            edited = work / f"i-norm-{key}-{bad}"
            shutil.copytree(buf, edited)
            value = meta.get(key)
            (edited / "buffer.json").write_text(json.dumps({**meta, key: [bad] * len(value or [0])}))
            case(f"distill on a buffer.json whose {key} is {bad}", "2",
                 *ddtool("distill", "--buffer", edited, "--out", work / f"i-n-{key}-{bad}", *SMALL,
                         "--iterations", "1"))
    case("compdd score --threshold 5", "2", *ddtool("compdd", "score", "--dataset", tiny, "--buffer", buf,
                                                    "--width", "8", "--threshold", "5", "--out", work / "s.csv", *CPU))
    for command, argv in (("buffer", ["buffer", *bufargs]), ("distill", d("", "--iterations", "1")[:4] + SMALL),
                          ("eval", ["eval", "--synthetic", good / "synthetic.pt", "--runs", "1", "--epochs", "1"]),
                          ("select", ["select", "--method", "random", "--ipc", "1"]),
                          ("export", ["export", good, "--format", "imagefolder"]),
                          ("report", ["report", good]),
                          ("bench", ["bench", work / "spec.toml", "--dry-run"])):
        if command == "distill":
            argv = ["distill", "--buffer", buf, *SMALL, "--iterations", "1"]
        case(f"{command} --out ''", "2", *ddtool(*argv, "--out", ""), command=command)
    case("distill --iterations 0", "0, the initial images (EDF's init row), no loss",
         *ddtool(*d(work / "i-zero", "--iterations", "0")))
    ro = readonly(work)
    spec = work / "good-spec.toml"
    spec.write_text('[bench]\ndatasets = ["fashion-mnist"]\nipcs = [1]\n[buffer]\nnum_experts = 1\ntrain_epochs = 2\n'
                    'width = 8\n[distill]\niterations = 1\nmax_start_epoch = 1\nexpert_epochs = 1\n'
                    '[methods.MTT]\nmatcher = "mtt"\n')
    case("bench with a read-only --out", "2 before compute", *ddtool("bench", spec, "--out", ro / "bench", *CPU))
    case("bench-speed with --results in a read-only folder", "2 before timing",
         *ddtool("bench-speed", "--results", ro / "r.jsonl", "--iterations", "1", "--ipc", "1", "--syn-steps", "2",
                 "--width", "8", *CPU))
    (work / "random.toml").write_bytes(os.urandom(512))
    case("bench spec.toml of random bytes", "2", *ddtool("bench", work / "random.toml"))
    efbig_cases(work, case)
    case("distill under ulimit -f 16 KiB (EFBIG)", "2 naming the file",
         *limited(d(work / "i-efbig-d", "--iterations", "1"), 16 * 1024))
    startup_cases(work, buf, case)
    long_buffer = ["buffer", "--out", work / "i-term-buffer", "--num-experts", "3", "--epochs", "30", "--width", "8",
                   "--train-subset", "200", "--quiet", *CPU]
    case("SIGTERM to buffer", "143, one line", *signalled(long_buffer, signal.SIGTERM, 12))
    case("SIGINT to buffer", "130, one line", *signalled([*long_buffer[:2], work / "i-int-buffer", *long_buffer[3:]],
                                                        signal.SIGINT, 12))
    long_eval = ["eval", "--synthetic", good / "synthetic.pt", "--runs", "20", "--epochs", "300", "--quiet", *CPU]
    case("SIGTERM to eval", "143, one line", *signalled(long_eval, signal.SIGTERM, 12))
    case("SIGTERM to train-full", "143, one line",
         *signalled(["train-full", "--dataset", "fashion-mnist", "--epochs", "5", "--width", "8", "--full-results",
                     work / "i-term-full.json", "--quiet", *CPU], signal.SIGTERM, 12))
    case("SIGTERM to bench", "143, one line",
         *signalled(["bench", spec, "--out", work / "i-term-bench", "--quiet", *CPU], signal.SIGTERM, 12))
    first = subprocess.Popen([*DDTOOL, *map(str, long_eval), "--json", work / "two.json"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(15)
    case("a second eval --json writer to the same file", "2 at once",
         *ddtool("eval", "--synthetic", good / "synthetic.pt", "--runs", "1", "--epochs", "1", "--json",
                 work / "two.json", "--quiet", *CPU))
    first.kill()
    first.communicate()
    garbled = work / "i-garbled"
    shutil.copytree(buf, garbled)
    data = bytearray((garbled / "expert_000.pt").read_bytes())
    for i in range(len(data) // 2, len(data) - 200, 97):
        data[i] ^= 0x5A
    (garbled / "expert_000.pt").write_bytes(bytes(data))
    case("distill with a byte-garbled expert file", "2, corrupt file (not divergence)",
         *ddtool("distill", "--buffer", garbled, "--out", work / "i-garbled-out", *SMALL, "--iterations", "3"))
    bench = '[bench]\ndatasets = ["fashion-mnist"]\nipcs = {ipcs}\n[buffer]\nnum_experts = 1\ntrain_epochs = 2\n' \
            'width = 8\n[distill]\niterations = 1\nmax_start_epoch = {start}\nexpert_epochs = 1\n{extra}' \
            '[methods.MTT]\nmatcher = "mtt"\n{method}'
    for name, fields in (("[ipc.7] not in ipcs", dict(ipcs="[1]", start=1, extra="[ipc.7.distill]\niterations = 2\n")),
                         ("ipcs = [1, 1]", dict(ipcs="[1, 1]", start=1, extra="")),
                         ("max_start_epoch beyond the buffer", dict(ipcs="[1]", start=5, extra="")),
                         ("a method with --cpd-alpha but no plugin", dict(ipcs="[1]", start=1, extra="",
                                                                          method="cpd_alpha = 0.5\n")),
                         ("a method with lr_img = nan", dict(ipcs="[1]", start=1, extra="", method="lr_img = nan\n")),
                         ("ipcs = []", dict(ipcs="[]", start=1, extra=""))):
        path = work / "spec-case.toml"
        path.write_text(bench.format(**{"method": "", **fields}))
        case(f"bench spec with {name}", "2 before any cell", *ddtool("bench", path, "--out", work / "i-bench", *CPU),
             command="bench")
    case("distill --preset datm/cifar10/ipc1 --syn-steps -5", "2",
         *ddtool(*d(work / "i-preset", "--iterations", "1", "--preset", "datm/cifar10/ipc1", "--syn-steps", "-5")))
    case("distill --preset no/such/preset", "2", *ddtool(*d(work / "i-preset2", "--iterations", "1", "--preset",
                                                            "no/such/preset")))
    case("distill --matcher datm --label-experts 99 (2-expert buffer)", "2",
         *ddtool(*d(work / "i-label", "--iterations", "1", "--matcher", "datm", "--label-experts", "99")))
    case("distill --plugin os.path", "2", *ddtool(*d(work / "i-os", "--iterations", "1", "--plugin", "os.path")))
    case("distill --plugin no.such.module", "2", *ddtool(*d(work / "i-nomod", "--iterations", "1", "--plugin",
                                                            "no.such.module")))
    case("bench --devices ''", "2", *ddtool("bench", spec, "--devices", "", "--dry-run"))
    case("bench --devices cpu,,cpu", "2", *ddtool("bench", spec, "--devices", "cpu,,cpu", "--dry-run"))
    case("presets --show ''", "2", *ddtool("presets", "--show", ""))
    case("presets --show no/such", "2", *ddtool("presets", "--show", "no/such"))
    for command, argv in (("eval", ["eval", "--random-ipc", "1", "--dataset", "fashion-mnist", "--runs", "1",
                                    "--epochs", "1", *CPU]),
                          ("distill", d(work / "i-env", "--iterations", "1"))):
        case(f"{command} with DDTOOL_DATA set to a missing folder", "2",
             *ddtool(*argv, env={"DDTOOL_DATA": str(work / "missing")}), command=command)
    case("edf-ablation --rows nosuchrow", "2, one line", *ddtool("edf-ablation", "--rows", "nosuchrow",
                                                                "--out", work / "i-edf"))
    case("bench-speed --modes nope", "2, one line", *ddtool("bench-speed", "--modes", "nope"))
    case("demo --out a file", "2, one line", *ddtool("demo", "--out", work / "afile"))


#: bad values for a numeric option, and for a path
NUMBERS = ("0", "-1", "nan", "inf", "1e40", "abc", "")
PATHS = ("file-as-folder", "missing", "read-only")
PATH_DESTS = {"out", "buffer", "synthetic", "json", "full_results", "results", "save_model", "data_root", "dir",
              "scores", "weights", "class_map", "teacher", "wandb_dir", "tensorboard_dir", "png", "compare",
              "per_image", "source", "imagenet_root", "categories", "dae_weights", "dae_class_map", "run", "spec",
              "run_dirs", "label"}
NUMERIC_TYPES = {"positive_int", "non_negative_int", "positive_float", "non_negative_float", "learning_rate", "seed",
                 "crop_ratio", "int", "float", "integer", "_beta_type", "_every_type", "_threshold_type",
                 "_alpha_type", "ema_decay"}
#: flags not tried: output form only, or that need a GPU or a launch
UNTRIED = {"--help", "--device", "--dist-backend", "--threads", "--quiet", "-p", "--plugin"}


def grid(work: Path, buf: Path, good: Path, case) -> None:
    """For every subcommand, each numeric or path option given bad values; three at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from ddtoolbox.cli import build_parser, manager

    afile, ro = work / "afile", readonly(work)
    g = work / "grid"
    g.mkdir()
    spec = work / "good-spec.toml"
    tiny = f"imagefolder:{work / 'tiny'}"
    blocked = afile / "out"          # an --out no command can write: a valid value elsewhere stops there
    bases = {
        "buffer": ["buffer", "--num-experts", "1", "--epochs", "1", "--width", "8", "--train-subset", "30", "--quiet",
                   *CPU, "--out", "{out}"],
        "distill": ["distill", "--buffer", buf, *SMALL, "--iterations", "1", "--eval-every", "0", "--out", "{out}"],
        "edf-ablation": ["edf-ablation", "--buffer", buf, *SMALL, "--iterations", "1", "--out", blocked],
        "eval": ["eval", "--synthetic", good / "synthetic.pt", "--runs", "1", "--epochs", "1", "--quiet", *CPU],
        "train-full": ["train-full", "--dataset", tiny, "--epochs", "1", "--width", "8", "--quiet", *CPU,
                       "--full-results", "{out}.json"],
        "select": ["select", "--method", "random", "--dataset", tiny, "--ipc", "1", "--quiet", *CPU, "--out", "{out}"],
        "export": ["export", good, "--format", "imagefolder", "--out", "{out}"],
        "report": ["report", good, "--out", "{out}"],
        "bench": ["bench", spec, "--dry-run", "--out", "{out}"],
        "bench-speed": ["bench-speed", "--iterations", "1", "--ipc", "1", "--syn-steps", "2", "--width", "8",
                        "--size", "8", "--num-classes", "2", "--quiet", *CPU, "--results", afile / "r.jsonl"],
        "presets": ["presets"],
        "plugins": ["plugins"],
        "plugin": ["plugin", "new", "myplug", "--dir", "{out}"],
        "demo": ["demo", "--out", blocked],
        "data subsets": ["data", "subsets"],
        "data prepare": ["data", "prepare", "--source", work / "tiny", "--dataset", "tinyset", "--out", blocked],
        "compdd score": ["compdd", "score", "--dataset", tiny, "--buffer", buf, "--width", "8", *CPU, "--out",
                         afile / "s.csv"],
        "compdd select": ["compdd", "select", "--scores", work / "missing.csv", "--out", "{out}.json"],
        "compdd stats": ["compdd", "stats", "--dataset", tiny, "--buffer", buf, "--width", "8", *CPU, "--out",
                         afile / "s.json"],
    }
    parser = build_parser(manager())
    jobs, seen = [], set()
    for name, base in bases.items():
        top, *sub = name.split()
        command = parser.commands[top]
        if sub:
            action = next(a for a in command._actions if a.__class__.__name__ == "_SubParsersAction")
            command = action.choices[sub[0]]
        options = [a for a in command._actions if a.option_strings and not set(a.option_strings) & UNTRIED]
        many = len(options) > 12
        for k, action in enumerate(options):
            flag = max(action.option_strings, key=len)
            kind = getattr(action.type, "__name__", "")
            if action.dest in PATH_DESTS:
                values = PATHS if (flag, kind) not in seen else PATHS[k % 3:k % 3 + 1]
            elif kind in NUMERIC_TYPES:
                # every value for the few options of a small command; two (one for an option an earlier
                # command shares, parsed by the same code) where a command has dozens, rotating
                count = 1 if (flag, kind) in seen or len(options) > 40 else 2 if many else len(NUMBERS)
                values = tuple(NUMBERS[(k + 3 * j) % len(NUMBERS)] for j in range(count))
            else:
                continue
            seen.add((flag, kind))
            for value in values:
                out = g / f"{len(jobs)}"
                given = {"file-as-folder": afile / "x", "missing": work / "missing" / "x", "read-only": ro / "x"}.get(
                    value, value)
                argv = [str(a).replace("{out}", str(out)) for a in base]
                if flag in argv:                                   # replace the base's value
                    i = argv.index(flag)
                    argv[i + 1] = str(given)
                else:
                    argv += [flag, str(given)]
                jobs.append((f"{name} {flag} {value!r}", argv, name.split()[0]))

    def one(job):
        label, argv, command = job
        try:
            return job, ddtool(*argv, timeout=300)
        except subprocess.TimeoutExpired:
            return job, (-1, "TIMEOUT after 300 s")

    if os.environ.get("FAULTS_REVERSE"):          # a second process taking the grid from its end
        jobs.reverse()
    with ThreadPoolExecutor(3) as pool:
        for (label, argv, command), (code, err) in pool.map(one, jobs):
            case(label, "0 or 2", code, err, command=command)


def tally(rows: list[dict]) -> list[str]:
    by = {}
    for r in rows:
        c = by.setdefault(r["command"], [0, 0])
        c[0 if r["clean"] else 1] += 1
    lines = ["| command | cases | clean | not clean |", "|---|---:|---:|---:|"]
    for name in sorted(by):
        lines.append(f"| {name} | {sum(by[name])} | {by[name][0]} | {by[name][1]} |")
    ok = sum(c[0] for c in by.values())
    lines.append(f"| **all** | **{len(rows)}** | **{ok}** | **{len(rows) - ok}** |")
    return lines


def write(rows: list[dict], seconds: float, how: str = "") -> Path:
    import ddtoolbox

    tag = os.environ.get("FAULTS_TAG", "")     # a second process writes README{tag}.md and results{tag}.json
    if os.environ.get("FAULTS_APPEND"):       # a rerun of some sections replaces their cases in the last results
        names = {r["case"] for r in rows}
        rows = [r for r in json.loads((HERE / "results.json").read_text()) if r["case"] not in names] + rows

    lines = ["# Bad input and faults, tried as a user would", "",
             f"`python benchmarks/faults/run.py` on {platform.node()} ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, ddtoolbox {ddtoolbox.__version__}; {len(rows)} cases "
             f"{how or f'in {seconds:.0f} s'}.",
             "", "Exit codes: 0 done, 2 usage or input error, 3 diverged, 130 / 143 interrupted (resumable), "
             "-9 killed by the test itself, 4 a lost rank. A case is **clean** when it exits 0, 2, 3, 4, 130 or 143 "
             "with one line on stderr (warnings aside) and no traceback.", "", *tally(rows), "",
             "| case | expected | exit | clean | what ddtool said (last lines of stderr) |", "|---|---|---:|---|---|"]
    for r in rows:
        text = r["message"].replace("|", "\\|").replace(str(Path(tempfile.gettempdir())), "/tmp")
        verdict = "yes" if r["clean"] else "**no**"
        lines.append(f"| {r['case'].replace('|', '/')} | {r['expected']} | {r['exit']} | {verdict} | {text} |")
    path = HERE / f"README{tag}.md"
    path.write_text("\n".join(lines) + "\n")
    (HERE / f"results{tag}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return path


def merge(tags: list[str]) -> Path:
    """Join results{tag}.json of processes that ran parts of the matrix side by side (the first file's
    case wins over a later one of the same name) into README.md and results.json."""
    rows, names = [], set()
    for tag in tags:
        for r in json.loads((HERE / f"results{tag}.json").read_text()):
            if r["case"] not in names:
                names.add(r["case"])
                rows.append(r)
    os.environ.pop("FAULTS_TAG", None)
    return write(rows, 0, f"run by {len(tags)} processes side by side (FAULTS_SECTIONS, FAULTS_REVERSE, FAULTS_TAG) "
                          f"and merged (--merge)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--merge"]:        # python run.py --merge "" -b -c
        print(f"wrote {merge(sys.argv[2:])}")
        sys.exit()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)
        rows = main(work, os.environ.get("FAULTS_SECTIONS", "issue,grid,original").split(","))
    print("\n".join(tally(rows)))
    print(f"wrote {write(rows, time.time() - start)}")
