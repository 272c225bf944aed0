"""papermill reads the project's Jupytext notebooks as they are: ``papermill notebooks/03_benchmark.py out.ipynb``.

papermill picks an I/O handler by the path's prefix (``s3://``, ``-``, ...) and falls back to reading local
files as ``.ipynb`` JSON. This module is loaded through the ``papermill.io`` entry point and puts one handler
first, under the empty prefix: a local file with a Jupytext text extension (``.py``, ``.md``, ...) is read
through jupytext and handed to papermill as a notebook; every other path, and every write, goes to the
handler papermill would have used without it.
"""

from __future__ import annotations

import os

TEXT_EXTENSIONS = (".py", ".md", ".markdown", ".Rmd", ".qmd", ".R", ".jl", ".sh")


class JupytextHandler:
    """A papermill I/O handler: Jupytext text notebooks in, everything else passed on."""

    def __init__(self) -> None:
        self._cwd: str | None = None

    @staticmethod
    def _others():
        from papermill.iorw import papermill_io

        return [(s, h) for s, h in papermill_io._handlers if not isinstance(h, JupytextHandler)]

    def _next(self, path: str):
        """The handler papermill's own lookup gives ``path``: the first matching prefix, else 'local'."""
        local = None
        for scheme, handler in self._others():
            if scheme == "local":
                local = handler
            elif path.startswith(scheme):
                return handler
        if local is None:
            from papermill.exceptions import PapermillException

            raise PapermillException(f"Could not find a registered schema handler for: {path}")
        return local

    def _text_notebook(self, path: str) -> str | None:
        if not isinstance(path, str) or "://" in path or not path.endswith(TEXT_EXTENSIONS):
            return None
        full = os.path.join(self._cwd or os.getcwd(), os.path.expanduser(path))
        return full if os.path.isfile(full) else None

    def read(self, path: str) -> str:
        full = self._text_notebook(path)
        if full is None:
            return self._next(path).read(path)
        import jupytext
        import nbformat

        return nbformat.writes(jupytext.read(full))

    def write(self, buf: str, path: str):
        return self._next(path).write(buf, path)

    def listdir(self, path: str):
        return self._next(path).listdir(path)

    def pretty_path(self, path: str) -> str:
        return self._next(path).pretty_path(path)

    def cwd(self, new_path: str):
        """papermill's ``--cwd`` / working-directory switch, kept here and passed to the local handler."""
        old, self._cwd = self._cwd, new_path
        local = self._next("local")
        if hasattr(local, "cwd"):
            local.cwd(new_path)
        return old


def _register() -> JupytextHandler:
    import warnings

    from papermill.iorw import papermill_io

    warnings.filterwarnings(  # papermill's note that a .py input is not .ipynb: this handler reads it
        "ignore", message=r"The specified file \(.*(\.py|\.md|\.R|\.jl|\.qmd|\.sh)\) does not end in"
    )

    for _, handler in papermill_io._handlers:
        if isinstance(handler, JupytextHandler):
            return handler
    handler = JupytextHandler()
    papermill_io.register("", handler)  # tried first: every path starts with ''
    return handler


handler = _register()  # the entry point's object; loading it registers the handler
