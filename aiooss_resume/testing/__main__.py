"""``python -m aiooss_resume.testing serve ...``: run the local OSS emulator."""

from __future__ import annotations

import sys

from ._cli import serve_main


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] != ["serve"]:
        print(  # noqa: T201
            "usage: python -m aiooss_resume.testing serve [--host H] [--port P] [--root DIR] "
            "[--access-key-id AK] [--access-key-secret SK] [--region R] [--bucket B ...] "
            "[--store disk|discard] [--fault SPEC ...]   (serve --help for all options)",
            file=sys.stderr,
        )
        return 2
    return serve_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
