"""Every code block of README.md and docs/*.md is exercised, and the docs name every public name.

- ``python`` blocks run as written, page by page (one namespace per page, in a temporary folder
  holding a link to ``configs/``); README's example is also checked against what it prints and
  the files it promises.
- ``yaml`` blocks are configs: a complete one (with ``optimizers``) is validated as it is, a
  fragment over ``configs/quickstart.yaml``; a ``sweep:`` is expanded into its grid.
- ``sh`` blocks are commands, checked without running them (they train for minutes or install):
  ``python -m ntkdyn.run`` through the CLI's own parser and config reader (every ``--set`` is
  applied and validated), ``python -m ntkdyn.report`` through its page-format rule, a script's
  file and flags, ``pip install``'s extras and constraint files, ``mkdocs`` subcommands.
- ``text`` blocks are output or synopses and are not run. Any other fence fails the test.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import tomllib

import pytest
import yaml

import ntkdyn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
KINDS = ("python", "yaml", "sh", "text")


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, indented fences (inside list items) included."""
    out = []
    for m in re.finditer(r"^( *)```(\S*)[^\n]*\n(.*?)^\1```", text, flags=re.S | re.M):
        indent = len(m.group(1))
        code = "\n".join(line[indent:] for line in m.group(3).splitlines())
        out.append((m.group(2), code + "\n"))
    return out


def python_blocks(text: str) -> list[str]:
    return [code for lang, code in blocks(text) if lang == "python"]


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _name(path: str) -> str:
    return os.path.relpath(path, ROOT)


def test_every_code_block_has_a_known_kind():
    for path in PAGES:
        for lang, code in blocks(_read(path)):
            assert lang in KINDS, f"{_name(path)}: a ```{lang} block (allowed: {KINDS}):\n{code[:200]}"
    assert sum(len(blocks(_read(p))) for p in PAGES) >= 15


def _run_page(path: str, tmp_path, monkeypatch) -> dict:
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(python_blocks(_read(path))):
        exec(compile(code, f"{_name(path)} python block {i + 1}", "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    assert len(python_blocks(_read(README))) >= 1
    namespace = _run_page(README, tmp_path, monkeypatch)
    out = capsys.readouterr().out
    run = namespace["run"]
    # what the example prints is the run it made, and the files it promises exist
    for label in ("gd", "hb"):
        assert f"{label}: {run[label].verdict}" in out
    assert (tmp_path / "tanh_loss.png").stat().st_size > 10_000 and (tmp_path / "tanh_loss.csv").is_file()
    assert (tmp_path / "tanh_run" / "metrics.json").is_file()
    assert run.spectrum.lambda_min > 0 and run["gd"].status == "ok"
    # pandas is a dependency: the long table is a DataFrame after a plain install
    assert type(run.trajectories).__name__ == "DataFrame"


DOC_PAGES = [p for p in PAGES[1:] if python_blocks(_read(p))]


@pytest.mark.parametrize("path", DOC_PAGES, ids=[os.path.basename(p) for p in DOC_PAGES])
def test_docs_python_blocks_run(path, tmp_path, monkeypatch):
    _run_page(path, tmp_path, monkeypatch)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def test_yaml_blocks_are_valid_configs():
    from ntkdyn import config as config_mod
    from ntkdyn import sweep

    base = config_mod.load_raw(os.path.join(ROOT, "configs", "quickstart.yaml"))
    checked = 0
    for path in PAGES:
        for lang, code in blocks(_read(path)):
            if lang != "yaml":
                continue
            doc = yaml.safe_load(code)
            raw = doc if "optimizers" in doc else _merge(base, doc)
            try:
                if "sweep" in raw:
                    assert len(sweep.expand(raw)) > 1
                else:
                    config_mod.from_dict(raw)
            except config_mod.ConfigError as exc:
                raise AssertionError(
                    f"{_name(path)}: yaml block is not a valid config: {exc}\n{code}"
                ) from None
            checked += 1
    assert checked >= 2


def _commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, split on && and newlines, a
    trailing & dropped; comments and blank lines skipped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part.strip().rstrip("&").strip())
            if words:
                out.append(words)
    return out


def _extras() -> set[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return set(tomllib.load(fh)["project"]["optional-dependencies"])


def _check_script(words: list[str]) -> None:
    script = os.path.join(ROOT, words[1])
    assert os.path.isfile(script), f"no such script: {words[1]}"
    sources = "".join(_read(p) for p in glob.glob(os.path.join(os.path.dirname(script), "*.py")))
    for flag in (w.split("=", 1)[0] for w in words[2:] if w.startswith("--")):
        assert f'"{flag}"' in sources, f"{words[1]} defines no {flag}"


def check_command(words: list[str]) -> None:
    """One command of a docs shell block, checked without running it (module docstring)."""
    from ntkdyn import report, run

    head = words[0]
    if head in ("python", "python3") and words[1:3] == ["-m", "ntkdyn.run"]:
        args = run.parse_args([os.path.join(ROOT, w) if w.startswith("configs/") else w for w in words[3:]])
        run.read_config(args)  # every --set applied, the config validated (a sweep expanded)
    elif head in ("python", "python3") and words[1:3] == ["-m", "ntkdyn.report"]:
        flags = [w for w in words[3:] if w.startswith("--")]
        assert all(f'"{f}"' in _read(report.__file__) for f in flags), flags
        report.page_format(words[words.index("--out") + 1] if "--out" in words else "report.html")
    elif head in ("python", "python3") and words[1:3] in (["-m", "venv"], ["-m", "pytest"]):
        pass
    elif head in ("python", "python3") and words[1].endswith(".py"):
        _check_script(words)
    elif head in (".", "source"):
        assert words[1].endswith("/bin/activate"), words
    elif head == "pip":
        assert words[1] == "install", words
        for i, w in enumerate(words[2:], 2):
            extras = re.fullmatch(r"\.\[([\w,-]+)\]", w)
            if extras:
                assert set(extras.group(1).split(",")) <= _extras(), w
            if words[i - 1] == "-c":
                assert os.path.isfile(os.path.join(ROOT, w)), w
    elif head == "mkdocs":
        assert words[1] in ("build", "serve"), words
    elif head == "export" or head == "wait":
        pass
    else:
        raise AssertionError(f"no check for this command; add one to tests/test_readme.py: {words}")


def test_shell_commands_are_valid():
    checked = 0
    for path in PAGES:
        for lang, code in blocks(_read(path)):
            if lang != "sh":
                continue
            for words in _commands(code):
                try:
                    check_command(words)
                except (AssertionError, ValueError, SystemExit) as exc:
                    raise AssertionError(f"{_name(path)}: {' '.join(words)}: {exc!r}") from None
                checked += 1
    assert checked >= 10


def test_readme_set_up_commands_are_what_ci_runs():
    """The README's test command installs what .ci/run installs and runs the same pytest."""
    setup = section(_read(README), "Set-up (fresh machine, Python >= 3.11)")
    sh = [code for lang, code in blocks(setup) if lang == "sh"]
    assert len(sh) == 2 and "python -m ntkdyn.run configs/quickstart.yaml" in sh[0]
    ci = _read(os.path.join(ROOT, ".ci", "run"))
    assert re.search(r'pip install (-q )?-e "\.\[test[],]', ci) and 'pip install -e ".[test]"' in sh[1]
    assert "python -m pytest -q" in ci and "python -m pytest -q" in sh[1]


def test_docs_document_the_public_api():
    api = _read(os.path.join(ROOT, "docs", "python-api.md"))
    missing = [name for name in ntkdyn.__all__ if name != "__version__" and name not in api]
    assert not missing, f"docs/python-api.md does not mention {missing}"
    assert set(ntkdyn.__all__) <= set(dir(ntkdyn))
