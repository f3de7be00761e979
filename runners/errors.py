"""Errors a user can cause, printed by `upm` as one line (exit 2 for usage and config, 1 for a
failed job) instead of a traceback; `UPM_DEBUG=1` shows the traceback as well."""

from __future__ import annotations

import re


class UserError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while a job ran; exit 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


_PYTHON_EXC = re.compile(r"PythonException: (?:<class '([\w.]+)'>: )?(.*)\n((?:\s+at [^\n]*\n)*)")
_OUR_FRAME = re.compile(r"at \S*?/((?:model|state|transforms|pipelines|runners)/[\w/]+?)\.(\w+)"
                        r"\((\w+\.py:\d+)\)")
_CAUSED_BY = re.compile(r"Caused by: ([\w.$]+(?:Exception|Error)[^\n]*)")


def root_cause(error: BaseException) -> str:
    """The Python exception behind a failed Flink job (the innermost one a Python operator
    raised), else the innermost Java cause: one line, out of Flink's nested stack traces."""
    text = str(error) + "\n"
    python = _PYTHON_EXC.findall(text)
    if python:
        kind, message, frames = python[-1]
        where = _OUR_FRAME.findall(frames)  # innermost first
        at = ""
        if where:
            module, function, file_line = where[0]
            at = f" (in {function}, {module}.py line {file_line.split(':')[1]})"
        return f"{kind.rsplit('.', 1)[-1] + ': ' if kind else ''}{message.strip()}{at}"[:500]
    causes = _CAUSED_BY.findall(text)
    if causes:
        return causes[-1].strip()[:500]
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first[:500]
