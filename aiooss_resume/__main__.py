"""``python -m aiooss_resume``: the same command line as ``aiooss-resume``."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
