"""Screenshot the top of a report (what a reader sees first) with headless Chromium.

    python scripts/screenshot_report.py [demo-out/report/index.html] [--out docs/report.png]

Needs Debian's `chromium` (apt-get install chromium). The page is opened from
disk (file://, offline like the report itself); Chromium gets a virtual-time
budget so vega-embed draws the charts before the shot. Exits 2 with a message
when the page or Chromium is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-default-apps")


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1100,
               budget_ms: int = 20_000) -> Path:
    """Write a PNG of the first `width` x `height` pixels of `page`; return `out`."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    if not page.is_file():
        raise FileNotFoundError(f"no report at {page} (run `dynamics demo` first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
                        f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("page", nargs="?", default="demo-out/report/index.html")
    p.add_argument("--out", default="docs/report.png")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1100)
    args = p.parse_args(argv)
    try:
        path = screenshot(Path(args.page), Path(args.out), args.width, args.height)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"screenshot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
