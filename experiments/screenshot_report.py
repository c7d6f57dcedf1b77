"""Open the run report in headless Chromium and save a screenshot (the report must render in a browser).

Usage::

    .venv/bin/python experiments/screenshot_report.py [results/report.html] [--out report.png]

Needs Debian's ``chromium`` package (``apt-get install chromium``).  Exits 1 if Chromium is missing, if it
fails, or if the screenshot is blank (a page that rendered nothing); prints the screenshot's path and how much of
it is non-white.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 2400, timeout: int = 120) -> Path:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--virtual-time-budget=5000",
            f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    return png


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("html", nargs="?", default="results/report.html")
    ap.add_argument("--out", default="report-screenshot.png")
    args = ap.parse_args(argv)
    html, png = Path(args.html), Path(args.out)
    if not html.exists():
        print(f"{html} not found: run `elbo-lab run` first", file=sys.stderr)
        return 1
    try:
        screenshot(html, png)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"screenshot failed: {exc}", file=sys.stderr)
        return 1
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    ink = float((img.mean(-1) < 0.9).mean())
    print(f"{png}: {img.shape[1]}×{img.shape[0]} px, {ink:.1%} non-white")
    return 0 if ink > 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
