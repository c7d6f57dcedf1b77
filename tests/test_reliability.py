"""Hostile input (issue 14, items 3-4): every case is a one-line error with exit status 2 (or a refusal), never a
traceback, a NaN number, a blank image, unbounded memory, or a lost file.

The table is parametrised by kind -- options, output paths (read-only, immutable, a full disk, a directory for a
file), checkpoints, data, model outputs, directory ownership -- and every CLI case asserts exit 2, ONE stderr line
``elbo-lab: error: ...`` without "Traceback", and that the files already there are byte-identical afterwards.
Read-only and full disks are made real where the machine allows it (``chattr +i``, a read-only tmpfs, a tiny
tmpfs: we run as root in CI, where permission bits stop nothing) and are also simulated in-process (the one
function that creates files, or the one that writes bytes, raising EROFS/ENOSPC), which always runs.

Run the table:  ``.venv/bin/python -m pytest tests/test_reliability.py -q``  (kill -9 resume and concurrent
writers: ``tests/test_reliability_kill.py``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import elbo_lab.io as eio
from elbo_lab.cli import main as cli
from elbo_lab.ddpm import TrainConfig, load_checkpoint, train

TINY_DDPM = dict(
    T=20, base_channels=8, batch_size=8, eval_every=2, log_every=2, val_samples=2, device="cpu", eval_at_start=False
)
TINY_VAE = ["--epochs", "1", "--hidden", "8", "--latent", "2", "--iwae-k", "2", "--eval-samples", "2"]


# ---------------------------------------------------------------------------------------------------- helpers


def run_cli(capsys, argv) -> tuple[int, str]:
    """(exit status, stderr) of an in-process ``elbo-lab`` call (argparse's SystemExit included)."""
    try:
        rc = cli([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def assert_clean(rc: int, err: str, *fragments: str) -> str:
    """Exit 2, one stderr line starting ``elbo-lab: error:``, no traceback, each fragment in the line."""
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("elbo-lab: error:"), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (path → bytes), to prove nothing was changed or lost."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = p.read_bytes()
    return out


def expect_refusal(capsys, argv, keep: list[Path], *fragments: str) -> str:
    """The whole contract of a case: clean one-line error, exit 2, and the ``keep`` files byte-identical."""
    before = snapshot(*keep)
    rc, err = run_cli(capsys, argv)
    line = assert_clean(rc, err, *fragments)
    assert snapshot(*keep) == before, "files already there were changed or lost"
    return line


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory) -> Path:
    """A tiny trained DDPM (T = 20, learned variance, categorical head): best.pt, last.pt, metrics.json."""
    out = tmp_path_factory.mktemp("ddpm") / "run"
    train(TrainConfig(steps=2, **TINY_DDPM), out, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    np.savez(d / "small.npz", x=np.random.default_rng(0).integers(0, 5, size=(40, 4, 4)))
    return d / "small.npz"


@pytest.fixture
def keep_file(tmp_path) -> Path:
    p = tmp_path / "precious.txt"
    p.write_text("the user's thesis\n")
    return p


def _mount(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(params=["immutable", "ro-mount", "simulated"])
def readonly_dir(request, tmp_path, monkeypatch):
    """A directory holding precious.txt that cannot be written: ``chattr +i`` (root cannot write either), a
    read-only tmpfs, or (always available) the file-creating function raising EROFS for paths inside it."""
    d = tmp_path / "ro"
    kind = request.param
    if kind == "ro-mount":
        if not _mount(d, "size=1m,mode=0755"):
            pytest.skip("cannot mount a tmpfs here")
        request.addfinalizer(lambda: _umount(d))
    else:
        d.mkdir()
    (d / "precious.txt").write_text("the user's thesis\n")
    (d / "empty").mkdir()  # an empty read-only --out (claimed without mkdir: the marker write must fail)
    if kind == "immutable":
        if shutil.which("chattr") is None or subprocess.run(["chattr", "-R", "+i", str(d)]).returncode != 0:
            pytest.skip("chattr +i is not available here")
        request.addfinalizer(lambda: subprocess.run(["chattr", "-R", "-i", str(d)]))
    elif kind == "ro-mount":
        if subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
    else:
        real_create, real_mkdir = eio._create_new, os.mkdir

        def inside(p) -> bool:
            return Path(os.path.abspath(p)).is_relative_to(d)

        def create(tmp):
            if inside(tmp):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp))
            return real_create(tmp)

        def mkdir(p, *a, **k):
            if inside(p):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))
            return real_mkdir(p, *a, **k)

        monkeypatch.setattr(eio, "_create_new", create)
        monkeypatch.setattr(os, "mkdir", mkdir)
    return d


@pytest.fixture(params=["tmpfs", "simulated"])
def full_disk(request, tmp_path, monkeypatch):
    """A directory on a full disk: a 4 MiB tmpfs filled to the last byte, or (always available) the byte-writing
    function raising ENOSPC after half of its bytes.  Yields a function that fills the disk (call it after
    putting files there)."""
    d = tmp_path / "full"
    if request.param == "tmpfs":
        if not _mount(d, "size=4m"):
            pytest.skip("cannot mount a tmpfs here")
        request.addfinalizer(lambda: _umount(d))

        def fill():
            fd = os.open(d / ".filler", os.O_WRONLY | os.O_CREAT)
            try:
                for block in (65536, 4096, 512, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * block)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
    else:
        d.mkdir()

        def fill():
            real = eio._write_all

            def write_half(fd, data):
                real(fd, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(eio, "_write_all", write_half)

    return d, fill


# ---------------------------------------------------------------------------------------------------- options

BAD_OPTIONS = [
    # train ddpm: every numeric option outside its documented range (elbo_lab.options.RANGES)
    (["train", "ddpm", "--lr", "nan"], "--lr"),
    (["train", "ddpm", "--lr", "-1"], "--lr"),
    (["train", "ddpm", "--lr", "inf"], "--lr"),
    (["train", "ddpm", "--dropout", "2"], "--dropout"),
    (["train", "ddpm", "--dropout", "1"], "--dropout"),
    (["train", "ddpm", "--beta-end", "5"], "--beta-end"),
    (["train", "ddpm", "--beta-start", "-0.1"], "--beta-start"),
    (["train", "ddpm", "--beta-start", "0.03", "--schedule", "linear"], "below --beta-end"),
    (["train", "ddpm", "--schedule", "linear", "--T", "20"], "1000/T"),
    (["train", "ddpm", "--ema-decay", "5"], "--ema-decay"),
    (["train", "ddpm", "--ema-decay", "1"], "--ema-decay"),
    (["train", "ddpm", "--minutes", "inf"], "--minutes"),
    (["train", "ddpm", "--minutes", "0"], "--minutes"),
    (["train", "ddpm", "--T", "1000000000"], "--T"),
    (["train", "ddpm", "--T", "1"], "--T"),
    (["train", "ddpm", "--steps", "0"], "--steps"),
    (["train", "ddpm", "--batch-size", "0"], "--batch-size"),
    (["train", "ddpm", "--val-samples", "1"], "--val-samples"),
    (["train", "ddpm", "--val-samples", "20000"], "--val-samples"),
    (["train", "ddpm", "--seed", "-1"], "--seed"),
    (["train", "ddpm", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "ddpm", "--hybrid-lambda", "-1"], "--hybrid-lambda"),
    (["train", "ddpm", "--base-channels", "0"], "--base-channels"),
    (["train", "ddpm", "--num-res-blocks", "100"], "--num-res-blocks"),
    (["train", "ddpm", "--eval-every", "0"], "--eval-every"),
    (["train", "ddpm", "--levels", "1"], "--levels"),
    (["train", "ddpm", "--steps", "ten"], "--steps"),
    (["train", "ddpm", "--device", "tpu", "--steps", "1"], "unknown device"),
    # train vae
    (["train", "vae", "--lr", "1e30"], "--lr"),
    (["train", "vae", "--lr", "nan"], "--lr"),
    (["train", "vae", "--epochs", "0"], "--epochs"),
    (["train", "vae", "--iwae-k", "0"], "--iwae-k"),
    (["train", "vae", "--eval-samples", "1"], "--eval-samples"),
    (["train", "vae", "--latent", "0"], "--latent"),
    (["train", "vae", "--hidden", "10000000"], "--hidden"),
    (["train", "vae", "--batch-size", "-3"], "--batch-size"),
    (["train", "vae", "--levels", "1"], "--levels"),
    # bound / sample / verify / run
    (["bound", "CKPT", "--budget", "100000000"], "--budget"),
    (["bound", "CKPT", "--budget", "1"], "--budget"),
    (["bound", "CKPT", "--n", "1"], "--n"),
    (["bound", "CKPT", "--seed", "-5"], "--seed"),
    (["bound", "CKPT", "--estimator", "stratified", "--budget", "100"], "at most 38"),
    (["bound", "CKPT", "--estimator", "exact"], "--estimator"),
    (["sample", "CKPT", "--n", "0"], "--n"),
    (["sample", "CKPT", "--n", "100000"], "--n"),
    (["sample", "CKPT", "--out", "samples.txt"], ".png"),
    (["verify", "--seed", "1.5"], "--seed"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "--device", "tpu"], "--device"),
    (["derive", "no-such-derivation"], "unknown derivation"),
]


@pytest.mark.parametrize("argv,fragment", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_is_refused_before_any_work(argv, fragment, ddpm_run, tmp_path, capsys, keep_file, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output paths (runs/, results/, samples.png) would land here
    argv = [str(ddpm_run / "best.pt") if a == "CKPT" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "out"), "--no-progress"]
    expect_refusal(capsys, argv, [keep_file], fragment)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()  # nothing was started
    assert not (tmp_path / "results").exists() and not (tmp_path / "samples.png").exists()


def test_option_table_is_enforced_by_the_library_too():
    """The API refuses the same values (one table: elbo_lab.options.RANGES)."""
    from elbo_lab.errors import OptionError
    from elbo_lab.options import RANGES, check
    from elbo_lab.vae.train import TrainConfig as VAETrainConfig

    for bad in (dict(lr=float("nan")), dict(dropout=2.0), dict(T=10**9), dict(minutes=float("inf")), dict(seed=-1)):
        with pytest.raises(OptionError):
            TrainConfig(steps=1 if "minutes" not in bad else None, **bad).validate()
    with pytest.raises(OptionError):
        VAETrainConfig(lr=1e30)
    for name, r in RANGES.items():  # both ends of every row: inside accepted, outside refused
        lo = r.lo + (1 if r.kind is int and r.lo_open else 0)
        hi = r.hi - (1 if r.kind is int and r.hi_open else 0)
        for inside in (lo, hi) if r.kind is int and not r.even else ():
            assert check(name, inside) == inside
        with pytest.raises(OptionError):
            check(name, r.hi * 2 + 1 if r.hi > 0 else 1)
        with pytest.raises(OptionError):
            check(name, r.lo - 1)
        if r.kind is float:
            with pytest.raises(OptionError):
                check(name, float("nan"))


def test_bound_json_directory_fails_before_computing(ddpm_run, tmp_path, capsys, monkeypatch):
    import elbo_lab.bound

    def must_not_run(*a, **k):
        raise AssertionError("the bound was computed before the output path was checked")

    monkeypatch.setattr(elbo_lab.bound, "variational_bound", must_not_run)
    (tmp_path / "dir").mkdir()
    expect_refusal(capsys, ["bound", ddpm_run, "--json", tmp_path / "dir"], [ddpm_run], "is a directory")


# ---------------------------------------------------------------------------------------------------- output paths


def vae_argv(small_npz: Path, out: Path) -> list:
    return ["train", "vae", "--data", small_npz, "--levels", "5", *TINY_VAE, "--out", out, "--no-progress"]


def ddpm_argv(out: Path) -> list:
    return ["train", "ddpm", "--steps", "1", "--T", "20", "--base-channels", "8", "--out", out, "--no-progress"]


def _writers(ddpm_run: Path, small_npz: Path, d: Path) -> dict[str, list]:
    """Every command that writes, aimed at a new path inside directory ``d`` (read-only, full, ...)."""
    return {
        "train vae": vae_argv(small_npz, d / "vae"),
        "train ddpm": ddpm_argv(d / "ddpm"),
        "bound --json": ["bound", ddpm_run, "--n", "4", "--budget", "4", "--device", "cpu", "--json", d / "b.json"],
        "derive --json": ["derive", "gaussian_kl", "--json", d / "d.json"],
        "verify --json": ["verify", "no-such-claim", "--json", d / "v.json"],
        "sample --out": ["sample", ddpm_run, "--n", "2", "--device", "cpu", "--no-progress", "--out", d / "s.png"],
        "run --out": ["run", "--out", d / "results"],
        "train vae, empty --out": vae_argv(small_npz, d / "empty"),
        "train ddpm, empty --out": ddpm_argv(d / "empty"),
        "run, empty --out": ["run", "--out", d / "empty"],
    }


WRITERS = list(_writers(Path(), Path(), Path()))


@pytest.mark.parametrize("command", WRITERS)
def test_read_only_or_immutable_output(command, readonly_dir, ddpm_run, small_npz, capsys):
    argv = _writers(ddpm_run, small_npz, readonly_dir)[command]
    expect_refusal(capsys, argv, [readonly_dir, ddpm_run], "cannot write")


@pytest.mark.parametrize(
    "command", ["train vae", "train ddpm", "bound --json", "sample --out", "derive --json", "verify --json"]
)
def test_a_directory_where_a_file_belongs(command, ddpm_run, small_npz, tmp_path, capsys, keep_file):
    d = tmp_path / "target"
    d.mkdir()
    if command.startswith("train"):  # --out FILE for the trainers
        argv = vae_argv(small_npz, keep_file) if command == "train vae" else ddpm_argv(keep_file)
        expect_refusal(capsys, argv, [keep_file], "not a directory")
    else:
        name = {
            "bound --json": "b.json",
            "sample --out": "s.png",
            "derive --json": "d.json",
            "verify --json": "v.json",
        }[command]
        (d / name).mkdir()
        (d / name / "inside.txt").write_text("x")
        expect_refusal(capsys, _writers(ddpm_run, small_npz, d)[command], [d, keep_file], "is a directory")


CENTRAL = {  # a command -> the first function it calls into (made to fail with an OS or memory error)
    "run": ("elbo_lab.run", "run_pipeline", ["run", "--out", "OUT"]),
    "derive": ("elbo_lab.symbolic", "get", ["derive", "gaussian_kl"]),
    "verify": ("elbo_lab.checks.registry", "run_claims", ["verify"]),
    "train vae": ("elbo_lab.data", "load_data", ["train", "vae", "--out", "OUT", "--no-progress"]),
    "train ddpm": ("elbo_lab.ddpm.train", "train", ["train", "ddpm", "--steps", "1", "--out", "OUT"]),
    "bound": ("elbo_lab.ddpm.checkpoint", "load_model", ["bound", "CKPT", "--device", "cpu"]),
    "sample": ("elbo_lab.ddpm.checkpoint", "load_model", ["sample", "CKPT", "--device", "cpu", "--out", "OUT.png"]),
}
FAILURES = {
    "EROFS": lambda: OSError(errno.EROFS, os.strerror(errno.EROFS), "/somewhere"),
    "EACCES": lambda: PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/somewhere"),
    "ENOSPC": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "EISDIR": lambda: IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/somewhere"),
    "MemoryError": lambda: MemoryError(),
    "CUDA out of memory": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB"),
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("command", CENTRAL)
def test_the_one_error_layer_catches_os_and_memory_errors_anywhere(command, failure, ddpm_run, tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    """Wherever an OSError or MemoryError comes from (not only our own writes), every command prints one line."""
    import importlib

    module, name, argv = CENTRAL[command]

    def fail(*a, **k):
        raise FAILURES[failure]()

    monkeypatch.setattr(importlib.import_module(module), name, fail)
    sub = {"OUT": tmp_path / "out", "OUT.png": tmp_path / "out.png", "CKPT": ddpm_run / "best.pt"}
    line = expect_refusal(capsys, [sub.get(a, a) for a in argv], [ddpm_run])
    assert ("memory" in line) == ("emory" in failure)


def test_full_disk_bound_json_keeps_the_old_file(full_disk, ddpm_run, capsys):
    d, fill = full_disk
    old = d / "b.json"
    old.write_text('{"total": 1.234}\n')
    fill()
    expect_refusal(capsys, _writers(ddpm_run, Path(), d)["bound --json"], [old], "cannot write", "full")
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]  # the temporary was removed


def test_full_disk_trainers_keep_their_checkpoints(full_disk, ddpm_run, small_npz, capsys, tmp_path):
    d, fill = full_disk
    run = d / "ddpm"
    shutil.copytree(ddpm_run, run)
    vae = d / "vae"
    rc, err = run_cli(capsys, vae_argv(small_npz, vae))
    assert rc == 0, err
    fill()
    step = load_checkpoint(run / "last.pt")["step"]
    argv = ["train", "ddpm", "--resume", "--steps", str(step + 2), "--out", run, "--no-progress"]
    expect_refusal(capsys, argv, [run], "cannot write", "full")
    argv = ["train", "vae", "--resume", "--epochs", "2", "--out", vae, "--no-progress"]
    expect_refusal(capsys, argv, [vae], "cannot write", "full")


def test_full_disk_run_leaves_a_directory_the_next_run_accepts(full_disk, capsys, monkeypatch):
    from elbo_lab.run import Pipeline

    d, fill = full_disk
    fill()
    expect_refusal(capsys, ["run", "--out", d / "results"], [d], "cannot write", "full")
    monkeypatch.undo()  # space again
    if (d / ".filler").exists():
        (d / ".filler").unlink()
    pipe = Pipeline(d / "results", mode="quick", seed=0, device="cpu", log=lambda s: None)  # accepted
    pipe.lock.release()


def test_truncated_stage_file_is_computed_again(tmp_path):
    from elbo_lab.run import Pipeline

    pipe = Pipeline(tmp_path / "r", mode="smoke", seed=0, device="cpu", log=lambda s: None)
    (tmp_path / "r" / "stages" / "weights.json").write_text('{"rows": [1, 2')  # a torn file (e.g. by hand)
    assert pipe.stage("weights", lambda: {"rows": [1, 2, 3]})["rows"] == [1, 2, 3]
    assert json.loads((tmp_path / "r" / "stages" / "weights.json").read_text())["rows"] == [1, 2, 3]
    pipe.lock.release()


def test_written_files_get_the_users_permissions(tmp_path, ddpm_run):
    old = os.umask(0o027)
    try:
        eio.atomic_write_json(tmp_path / "a.json", {"x": 1})
        eio.atomic_torch_save(tmp_path / "b.pt", {"x": torch.zeros(2)})
        run = tmp_path / "run"
        train(TrainConfig(steps=1, **TINY_DDPM), run, progress=False, log=lambda *a: None)
        files = [tmp_path / "a.json", tmp_path / "b.pt", *(run / n for n in ("last.pt", "best.pt", "metrics.json"))]
        for p in files:
            assert p.stat().st_mode & 0o777 == 0o640, (p, oct(p.stat().st_mode))
    finally:
        os.umask(old)
    # and the normal 022 umask gives 0644, not mkstemp's 0600
    old = os.umask(0o022)
    try:
        assert eio.atomic_write_text(tmp_path / "c.txt", "x").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------------- checkpoints


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/elbo-lab-pwned",))


def _bad_checkpoints(ddpm_run: Path, d: Path) -> dict[str, Path]:
    good = torch.load(ddpm_run / "best.pt", weights_only=True)

    def variant(name, change):
        ck = {**good, "config": dict(good["config"]), "net_config": dict(good["net_config"]), "ema": dict(good["ema"])}
        change(ck)
        torch.save(ck, d / f"{name}.pt")
        return d / f"{name}.pt"

    first = next(k for k, v in good["ema"].items() if v.is_floating_point())
    out = {
        "variance bogus": variant("bogus", lambda ck: ck["config"].update(variance="bogus")),
        "T 50 for a T 20 network": variant("t50", lambda ck: ck["config"].update(T=50)),
        "T 10**9": variant("t1e9", lambda ck: ck["config"].update(T=10**9)),
        "NaN weights": variant(
            "nan", lambda ck: ck["ema"].update({first: torch.full_like(good["ema"][first], float("nan"))})
        ),
        "Inf weights": variant("inf", lambda ck: ck["ema"].update({first: good["ema"][first] + float("inf")})),
        "fixed variance, variance head": variant("novar", lambda ck: ck["config"].update(variance="posterior")),
        "levels vs categorical head": variant("levels", lambda ck: ck.update(data={**good["data"], "levels": 5})),
        "weights of another shape": variant("shape", lambda ck: ck["ema"].update({first: good["ema"][first][..., :1]})),
        "not a dict": None,
        "malicious pickle": None,
        "truncated": None,
        "junk bytes": None,
        "empty directory": None,
    }
    torch.save([1, 2, 3], d / "list.pt")
    out["not a dict"] = d / "list.pt"
    torch.save({"format": "elbo-lab-ddpm", "version": 1, "payload": _Evil()}, d / "evil.pt")
    out["malicious pickle"] = d / "evil.pt"
    raw = (ddpm_run / "best.pt").read_bytes()
    (d / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    out["truncated"] = d / "trunc.pt"
    (d / "junk.pt").write_bytes(b"\x00not a checkpoint")
    out["junk bytes"] = d / "junk.pt"
    (d / "empty").mkdir()
    out["empty directory"] = d / "empty"
    return out


BAD_CKPTS = [
    "variance bogus",
    "T 50 for a T 20 network",
    "T 10**9",
    "NaN weights",
    "Inf weights",
    "fixed variance, variance head",
    "levels vs categorical head",
    "weights of another shape",
    "not a dict",
    "malicious pickle",
    "truncated",
    "junk bytes",
    "empty directory",
]


@pytest.fixture(scope="module")
def bad_ckpts(ddpm_run, tmp_path_factory) -> dict[str, Path]:
    return _bad_checkpoints(ddpm_run, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("command", ["bound", "sample"])
@pytest.mark.parametrize("case", BAD_CKPTS)
def test_bad_checkpoint(case, command, bad_ckpts, tmp_path, capsys):
    path = bad_ckpts[case]
    argv = [command, path, "--device", "cpu"]
    argv += ["--n", "2", "--budget", "2"] if command == "bound" else ["--n", "2", "--out", tmp_path / "s.png"]
    if os.path.exists("/tmp/elbo-lab-pwned"):
        os.unlink("/tmp/elbo-lab-pwned")
    expect_refusal(capsys, argv, [path])
    assert not os.path.exists("/tmp/elbo-lab-pwned")  # never unpickled
    assert not (tmp_path / "s.png").exists()


def test_sample_never_writes_a_blank_image(ddpm_run, tmp_path, capsys, monkeypatch):
    """A chain that produces NaN (e.g. a model whose outputs overflow) is an error, not a blank PNG."""
    import elbo_lab.ddpm.sampling as sampling

    monkeypatch.setattr(sampling, "ancestral_sample", lambda model, shape, n, **k: torch.full((n, *shape), torch.nan))
    argv = ["sample", ddpm_run, "--n", "2", "--device", "cpu", "--no-progress", "--out", tmp_path / "s.png"]
    expect_refusal(capsys, argv, [ddpm_run], "NaN")
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------------------------------------- model outputs


@pytest.mark.parametrize("value", [1e200, float("nan"), float("inf")])
def test_non_finite_or_overflowing_model_output_is_an_error(value):
    from elbo_lab.bound import variational_bound
    from elbo_lab.errors import ModelOutputError
    from elbo_lab.schedule import NoiseSchedule

    s = NoiseSchedule.cosine(10)
    x = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ModelOutputError):
        variational_bound(lambda xt, k: torch.full_like(xt, value), s, x, levels=3)
    # a sane model still gives a finite bound on the same input
    assert np.isfinite(variational_bound(lambda xt, k: torch.zeros_like(xt), s, x, levels=3).mean())


# ---------------------------------------------------------------------------------------------------- data


def _bad_data(d: Path) -> dict[str, tuple[Path, str]]:
    out = {}

    def save(name, arr, fragment, **kw):
        np.save(d / name, arr, **kw)
        out[name] = (d / name, fragment)

    hdr = np.lib.format.header_data_from_array_1_0(np.zeros((2, 8, 8)))
    hdr["shape"] = (10**11, 8, 8)  # a header claiming 1e11 examples over 1 KB of data
    with open(d / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, hdr)
        f.write(b"\0" * 1024)
    out["huge.npy"] = (d / "huge.npy", "header claims")
    hdr["shape"] = (1000, 8, 8)
    with open(d / "short.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, hdr)
        f.write(b"\0" * 1024)
    out["short.npy"] = (d / "short.npy", "too short")
    save("nan.npy", np.full((10, 8, 8), np.nan), "NaN")
    save("object.npy", np.array([{"a": 1}] * 10, dtype=object), "not a readable", allow_pickle=True)
    save("empty.npy", np.zeros((0, 8, 8)), "empty")
    save("one.npy", np.zeros((1, 8, 8), dtype=np.int64), "at least 2")
    save("range.npy", np.full((10, 8, 8), 3.5), "expected integer levels")
    save("offgrid.npy", np.random.default_rng(0).uniform(-1, 1, (10, 8, 8)), "not on a grid")
    save("toomany.npy", np.full((10, 8, 8), 10**6, dtype=np.int64), "levels")
    save("shape5d.npy", np.zeros((4, 2, 2, 2, 2), dtype=np.int64), "expected shape")
    save("complex.npy", np.zeros((10, 4), dtype=np.complex128), "numeric")
    (d / "text.npy").write_text("not numpy")
    out["text.npy"] = (d / "text.npy", "not a readable")
    (d / "dir.npy").mkdir()
    out["dir.npy"] = (d / "dir.npy", "directory")
    np.savez(d / "two.npz", a=np.zeros((4, 4)), b=np.zeros((4, 4)))
    out["two.npz"] = (d / "two.npz", "'train' and 'test'")
    (d / "data.csv").write_text("1,2,3\n")
    out["data.csv"] = (d / "data.csv", "unsupported")
    out["missing.npy"] = (d / "missing.npy", "not found")
    return out


BAD_DATA = [
    "huge.npy",
    "short.npy",
    "nan.npy",
    "object.npy",
    "empty.npy",
    "one.npy",
    "range.npy",
    "offgrid.npy",
    "toomany.npy",
    "shape5d.npy",
    "complex.npy",
    "text.npy",
    "dir.npy",
    "two.npz",
    "data.csv",
    "missing.npy",
]


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    return _bad_data(tmp_path_factory.mktemp("baddata"))


@pytest.mark.parametrize("command", ["train vae", "train ddpm", "bound"])
@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data(case, command, bad_data, ddpm_run, tmp_path, capsys):
    path, fragment = bad_data[case]
    if command == "train vae":
        argv = ["train", "vae", "--data", path, "--out", tmp_path / "o", "--no-progress"]
    elif command == "train ddpm":
        argv = ["train", "ddpm", "--data", path, "--steps", "1", "--out", tmp_path / "o", "--no-progress"]
    else:
        argv = ["bound", ddpm_run, "--data", path, "--n", "2", "--device", "cpu"]
    expect_refusal(capsys, argv, [p for p in (path, ddpm_run) if p.is_file() or p.is_dir()], fragment)


def test_integer_binary_and_all_zero_data_are_accepted(tmp_path):
    from elbo_lab.data import load_data

    bits = np.random.default_rng(0).integers(0, 2, size=(30, 8, 8))
    np.save(tmp_path / "bits.npy", bits)
    ds = load_data(str(tmp_path / "bits.npy"), levels=2)
    assert ds.levels == 2 and set(ds.train.unique().tolist()) == {-1.0, 1.0}
    assert (
        ds.train.numel() + ds.test.numel() == bits.size and (ds.train == 1).sum() + (ds.test == 1).sum() == bits.sum()
    )
    np.save(tmp_path / "bitsf.npy", bits.astype(np.float32))  # the same as floats {0., 1.}: levels, with --levels 2
    assert torch.equal(load_data(str(tmp_path / "bitsf.npy"), levels=2).train, ds.train)
    np.save(tmp_path / "bool.npy", bits.astype(bool))
    assert torch.equal(load_data(str(tmp_path / "bool.npy")).train, ds.train)
    np.save(tmp_path / "zeros.npy", np.zeros((30, 8, 8), dtype=np.uint8))
    z = load_data(str(tmp_path / "zeros.npy"))
    assert z.levels == 2 and bool((z.train == -1).all())
    assert load_data(str(tmp_path / "zeros.npy"), levels=17).levels == 17
    # floats on the [-1, 1] grid keep their meaning: {-1, 0, 1} with 3 levels
    np.save(tmp_path / "tri.npy", np.random.default_rng(1).integers(-1, 2, size=(30, 4)).astype(np.float64))
    t = load_data(str(tmp_path / "tri.npy"), levels=3)
    assert set(t.train.unique().tolist()) <= {-1.0, 0.0, 1.0} and t.levels == 3


# ---------------------------------------------------------------------------------------------------- ownership


def test_trainers_refuse_a_foreign_non_empty_directory(small_npz, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"my": "results"}\n')
    (foreign / "notes.txt").write_text("precious\n")
    for argv in (vae_argv(small_npz, foreign), ddpm_argv(foreign)):
        expect_refusal(capsys, argv, [foreign], "not empty", "choose another")
    assert sorted(p.name for p in foreign.iterdir()) == ["metrics.json", "notes.txt"]  # not even a marker


def test_existing_run_without_resume_is_refused(ddpm_run, small_npz, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ddpm_run, run)
    expect_refusal(capsys, ddpm_argv(run), [run], "--resume")
    vae = tmp_path / "vae"
    rc, err = run_cli(capsys, vae_argv(small_npz, vae))
    assert rc == 0, err
    expect_refusal(capsys, vae_argv(small_npz, vae), [vae], "--resume")
    # and one tool's directory is not another's
    expect_refusal(capsys, ["train", "ddpm", "--steps", "1", "--out", vae, "--no-progress"], [vae], "train vae")
    expect_refusal(capsys, ["run", "--out", vae], [vae], "train vae")


@pytest.mark.parametrize("command", ["train vae", "train ddpm", "run --out"])
def test_a_second_concurrent_writer_is_refused(command, ddpm_run, small_npz, tmp_path, capsys):
    """A directory another process is writing to (held here by the same lock a running command takes)."""
    d = tmp_path / "busy"
    tool = {"train vae": "elbo-lab train vae", "train ddpm": "elbo-lab train ddpm", "run --out": "elbo-lab run"}
    # the run's marker config: mode, seed, its DDPM budget and torch threads (elbo_lab.run.Pipeline._claim_dir)
    from elbo_lab.run import BUDGETS

    run_config = {"mode": "quick", "seed": 0, "ddpm_budget": f"{BUDGETS['quick'].ddpm_steps} steps", "threads": 1}
    config = run_config if command == "run --out" else {}
    with eio.claim_output_dir(d, tool=tool[command], config=config):
        argv = {"train vae": vae_argv(small_npz, d), "train ddpm": ddpm_argv(d), "run --out": ["run", "--out", d]}
        expect_refusal(capsys, argv[command], [d], "in use by another")
    if command == "train vae":  # released: the same command now runs
        rc, err = run_cli(capsys, vae_argv(small_npz, d))
        assert rc == 0, err


def test_resumed_ddpm_log_matches_an_uninterrupted_one(tmp_path):
    """The running means of the next training-log record are part of last.pt."""
    cfg = dict(TINY_DDPM, eval_every=3, log_every=4)
    train(TrainConfig(steps=8, **cfg), tmp_path / "full", progress=False, log=lambda *a: None)
    train(TrainConfig(steps=3, **cfg), tmp_path / "half", progress=False, log=lambda *a: None)  # mid-record
    train(TrainConfig(steps=8, **cfg), tmp_path / "half", resume=True, progress=False, log=lambda *a: None)

    def log(run):
        h = json.loads((run / "metrics.json").read_text())["history"]
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in h]

    a, b = log(tmp_path / "full"), log(tmp_path / "half")
    assert [r for r in a if "train_loss" in r] and a == b


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    """The installed entry point (a real process): a bad option and a bad path, stderr one line."""
    for argv in (["train", "ddpm", "--lr", "nan"], ["derive", "gaussian_kl", "--json", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-m", "elbo_lab.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


class _EvalPickle:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned > /tmp/elbo-lab-pwned')",))


@pytest.mark.parametrize("variant", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("reader", ["bound", "sample", "train ddpm --resume", "train vae --resume"])
def test_malicious_pickle_is_refused_by_every_checkpoint_reader(reader, variant, tmp_path, capsys):
    payload = _Evil() if variant == "os.system" else _EvalPickle()
    run = tmp_path / "run"
    run.mkdir()
    name = "checkpoint.pt" if reader == "train vae --resume" else "last.pt"
    fmt = "elbo-lab/vae-checkpoint" if reader == "train vae --resume" else "elbo-lab-ddpm"
    torch.save({"format": fmt, "version": 1, "payload": payload}, run / name)
    argv = {
        "bound": ["bound", run / name, "--device", "cpu"],
        "sample": ["sample", run / name, "--device", "cpu", "--out", tmp_path / "s.png"],
        "train ddpm --resume": ["train", "ddpm", "--resume", "--steps", "9", "--out", run, "--no-progress"],
        "train vae --resume": ["train", "vae", "--resume", "--out", run, "--no-progress"],
    }[reader]
    if os.path.exists("/tmp/elbo-lab-pwned"):
        os.unlink("/tmp/elbo-lab-pwned")
    expect_refusal(capsys, argv, [run], "not a readable checkpoint")
    assert not os.path.exists("/tmp/elbo-lab-pwned")
