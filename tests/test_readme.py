"""The README's Python code blocks run as written (in one namespace, in a temporary folder), and
the README's "Python API" section names every public name of ``ntkdyn``."""

import os
import re

import ntkdyn

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    with open(README) as fh:
        text = fh.read()
    blocks = python_blocks(text)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    run = namespace["run"]
    # what the example prints is the run it made, and the files it promises exist
    for label in ("gd", "hb"):
        assert f"{label}: {run[label].verdict}" in out
    assert (tmp_path / "tanh_loss.png").stat().st_size > 10_000 and (tmp_path / "tanh_loss.csv").is_file()
    assert (tmp_path / "tanh_run" / "metrics.json").is_file()
    assert run.spectrum.lambda_min > 0 and run["gd"].status == "ok"


def test_readme_documents_the_public_api():
    with open(README) as fh:
        api = section(fh.read(), "Python API")
    missing = [name for name in ntkdyn.__all__ if name != "__version__" and name not in api]
    assert not missing, f"README 'Python API' does not mention {missing}"
    assert set(ntkdyn.__all__) <= set(dir(ntkdyn))
