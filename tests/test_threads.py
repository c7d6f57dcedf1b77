"""`--threads`: every torch command takes it, the default (1) is applied before any work, bad values exit 2."""

import pytest
import torch

from elbo_lab.cli import build_parser, main
from elbo_lab.threads import DEFAULT_THREADS, apply_threads, torch_default_threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "argv", [["run"], ["bound", "x"], ["sample", "x"], ["verify"], ["train", "vae"], ["train", "ddpm"]]
)
def test_every_torch_command_takes_threads(argv):
    p = build_parser()
    assert p.parse_args(argv).threads == DEFAULT_THREADS == 1
    assert p.parse_args(argv + ["--threads", "3"]).threads == 3


def test_apply_threads_sets_the_count():
    assert apply_threads(1) == torch.get_num_threads() == 1
    assert apply_threads(0) == torch_default_threads() == torch.get_num_threads()
    assert apply_threads(None) == torch_default_threads()


def test_the_cli_applies_the_default_before_the_command(tmp_path, capsys):
    torch.set_num_threads(torch_default_threads() + 1)
    assert main(["sample", str(tmp_path / "missing.pt")]) == 2  # fails on the checkpoint, after the thread setting
    capsys.readouterr()
    assert torch.get_num_threads() == 1


def test_negative_threads_is_a_one_line_error(capsys):
    assert main(["verify", "--threads", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elbo-lab: error: --threads") and err.count("\n") == 1
