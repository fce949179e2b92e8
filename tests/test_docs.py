"""The Examples in the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["fastxent.losses", "fastxent.keras", "fastxent._plan", "fastxent.sklearn",
           "fastxent.sklearn._estimator", "fastxent.sklearn._metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name != "fastxent.losses"


# ------------------------------------------------------------------- README code blocks

README = __import__("pathlib").Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    import re
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("line, code", _python_blocks(), ids=lambda v: str(v)
                         if isinstance(v, int) else None)
def test_readme_python_blocks_run_as_written(line, code, tmp_path, monkeypatch):
    # Each block must run on its own, pasted into a fresh interpreter: no names from
    # another block, and line by line in the interactive interpreter too (a compound
    # statement followed by a blank line).
    import warnings

    from fastxent._diagnostics import InputWarning
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    # pasted, an example runs quietly (the diagnostics example's InputWarning is its point)
    noisy = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, InputWarning)]
    assert not noisy, f"README.md:{line} warns: {noisy}"
    import codeop
    buf = []
    for text in code.splitlines() + [""]:
        buf.append(text)
        src = "\n".join(buf)
        if codeop.compile_command(src, "<stdin>", "single") is not None:
            buf = []
    assert not any(b.strip() for b in buf), f"README.md:{line}: incomplete interactive input"


def test_readme_has_python_blocks_and_two_setup_commands():
    import re
    assert len(_python_blocks()) >= 4
    setup = README.read_text().split("## Set-up", 1)[1].split("```")[1]
    commands = [c for c in setup.splitlines()[1:] if c.strip()]
    assert len(commands) == 2 and "pytest" in commands[1], commands
    assert re.search(r"python -m fastxent bench", commands[0])
